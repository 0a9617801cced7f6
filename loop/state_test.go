package loop

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"kwatch/builder"
	"kwatch/builder/buildertest"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/watcher"
)

// Unit tests of the loop's state machine, driven by the fakes in fake_test.go.

const taintD = 1 << 7 // "D": the kernel oopsed

var errBuild = &builder.Error{Diagnostics: []string{"hello.c:3:1: error: expected ';'"}, Fix: "fix the syntax"}

// oops is a kernel report blamed on module hello.
var oops = []string{
	"BUG: kernel NULL pointer dereference, address: 0000000000000000",
	"Oops: 0002 [#1] PREEMPT SMP NOPTI",
	"RIP: 0010:hello_write+0x13/0x1000 [hello]",
	"---[ end trace 0000000000000000 ]---",
}

// insmodFails makes every load of a file whose name starts with prefix fail.
func insmodFails(prefix, msg string) func(*fakeBoot, string, string) (guest.ReloadResult, error) {
	return func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		if strings.HasPrefix(path.Base(remote), prefix) {
			delete(b.loaded, name)
			return guest.ReloadResult{Unloaded: true, LoadErr: msg}, nil
		}
		b.loaded[name] = remote
		return guest.ReloadResult{}, nil
	}
}

// rmmodFails makes every unload of a loaded module fail with msg.
func rmmodFails(msg string) func(*fakeBoot, string, string) (guest.ReloadResult, error) {
	return func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		if _, ok := b.loaded[name]; ok {
			return guest.ReloadResult{UnloadErr: msg}, nil
		}
		b.loaded[name] = remote
		return guest.ReloadResult{}, nil
	}
}

// saveHeld saves while rmmod fails with msg and use says what holds the
// loaded module, and returns the load_failed event.
func (r *rig) saveHeld(t *testing.T, msg string, use guest.ModuleUse) event.Event {
	t.Helper()
	r.guest.set(func(g *fakeGuest) {
		g.reload = rmmodFails(msg)
		g.use = use
	})
	r.watch.save(t, "hello.c")
	return r.events.wait(t, "load_failed", 1)
}

func loadedIn(g *fakeGuest, name string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.boot.loaded[name]
}

func TestOnceLoads(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	ko := r.ko("hello")
	r.builder.steps = []buildStep{ko}
	if err := r.once(); err != nil {
		t.Fatalf("Run --once = %v, want nil; events:%s", err, r.events)
	}
	if got := loadedIn(r.guest, "hello"); got != remote(ko.ko) {
		t.Errorf("loaded %q, want %q", got, remote(ko.ko))
	}
	e := r.events.wait(t, "loaded", 1)
	if e.Module != "hello.ko" {
		t.Errorf("loaded event names %q, want hello.ko", e.Module)
	}
	for _, typ := range []event.Kind{"build_start", "build_ok"} {
		if len(r.events.of(typ)) != 1 {
			t.Errorf("want one %s event:%s", typ, r.events)
		}
	}
}

func TestOnceBuildFails(t *testing.T) {
	t.Parallel()
	r := newRig(t, true, buildStep{err: errBuild})
	if err := r.once(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Run --once = %v, want ErrFailed", err)
	}
	e := r.events.wait(t, "build_failed", 1)
	if e.Hint != "fix the syntax" || !slices.Equal(e.Diagnostics, errBuild.Diagnostics) {
		t.Errorf("build_failed = %+v, want the builder's diagnostics and hint", e)
	}
	if r.guest.reloadCount() != 0 {
		t.Error("a failed build reached the guest")
	}
}

func TestOnceLoadFails(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.reload = insmodFails("hello", "insmod: ERROR: could not insert module hello.ko: Invalid parameters")
	if e := r.onceFails(); !strings.HasPrefix(e.Message, "insmod: ") {
		t.Errorf("load_failed message %q, want it to start with insmod:", e.Message)
	}
	if len(r.events.of("loaded")) != 0 {
		t.Errorf("a failed load was reported as loaded:%s", r.events)
	}
}

// --once runs the --run commands after the load; one that fails, or runs
// longer than RunTimeout (and is killed), fails the run.
func TestOnceRunCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		run     fakeRun
		wantErr error
		message string // run_output's; "" for a command that ended
	}{
		{"success", fakeRun{out: "ok\n"}, nil, ""},
		{"non-zero exit", fakeRun{out: "bad\n", exit: 3}, ErrFailed, ""},
		{"guest unreachable", fakeRun{err: errors.New("connection reset")}, ErrFailed, ""},
		{"timed out", fakeRun{out: "so far\n", block: true}, ErrFailed, "killed after 50ms (--run-timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, true)
			r.cfg.Run = []string{"cat /dev/hello"}
			r.cfg.RunTimeout = 50 * time.Millisecond
			r.guest.runOutput["cat /dev/hello"] = tt.run
			if err := r.once(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run --once = %v, want %v", err, tt.wantErr)
			}
			if tt.run.err != nil {
				if len(r.events.of("error")) != 1 {
					t.Errorf("want one error event:%s", r.events)
				}
				return
			}
			e := r.events.wait(t, "run_output", 1)
			if e.Output != tt.run.out || e.Command != "cat /dev/hello" || e.Message != tt.message ||
				(tt.message == "") != (e.Exit != nil) || e.Exit != nil && *e.Exit != tt.run.exit {
				t.Errorf("run_output = %+v, want %+v with message %q", e, tt.run, tt.message)
			}
		})
	}
}

// kwatch's exit kills a --run command that still runs: Run does not wait
// for it to end on its own, and does not report it as stopped or failed.
func TestCancelDuringRun(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.cfg.Run = []string{"cat /dev/hello"}
	r.guest.runOutput["cat /dev/hello"] = fakeRun{block: true}
	r.start()
	r.guest.waitRuns(t, 1)
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if evs := r.events.of("run_output"); len(evs) != 0 {
		t.Errorf("run_output %+v for a command kwatch's exit stopped", evs)
	}
}

// A save while a --run command runs stops it and the new build is loaded: a
// command that never ends (a read() that never advances *ppos) must not keep
// kwatch from loading the fix.
func TestRunStoppedBySave(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.cfg.Run = []string{"cat /dev/hello"}
	r.guest.runOutput["cat /dev/hello"] = fakeRun{out: "fact\nfact\n", block: true}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.waitRuns(t, 1)
	r.guest.set(func(g *fakeGuest) { g.runOutput["cat /dev/hello"] = fakeRun{out: "fact\n"} })
	r.watch.save(t, "hello.c")
	if e := r.events.wait(t, "run_output", 1); e.Message != "stopped by a new save" || e.Exit != nil || e.Output != "fact\nfact\n" {
		t.Errorf("the stopped command's run_output = %q, exit %v, output %q; want it stopped by the save, with its output so far",
			e.Message, e.Exit, e.Output)
	}
	r.events.wait(t, "loaded", 2)
	if e := r.events.wait(t, "run_output", 2); e.Output != "fact\n" || e.Exit == nil || *e.Exit != 0 || e.Message != "" {
		t.Errorf("the fixed module's run_output = %q, exit %v, output %q", e.Message, e.Exit, e.Output)
	}
}

// What a --run command prints is kept up to a cap, its head and its tail,
// saying how much was cut: kwatch's memory stays bounded whatever the guest prints.
func TestRunOutputCapped(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.cfg.Run = []string{"cat /dev/hello"}
	middle := strings.Repeat("fact\n", 2<<20)
	r.guest.runOutput["cat /dev/hello"] = fakeRun{out: "first\n" + middle + "last\n"}
	if err := r.once(); err != nil {
		t.Fatal(err)
	}
	e := r.events.wait(t, "run_output", 1)
	total := len("first\n" + middle + "last\n")
	m := regexp.MustCompile(`(?s)^(first\n.*\n)\[\.\.\. (\d+) bytes cut \.\.\.\]\n(.*last\n)$`).FindStringSubmatch(e.Output)
	if m == nil {
		t.Fatalf("run_output has %d bytes, want its head, a line saying how much was cut and its tail", len(e.Output))
	}
	cut, _ := strconv.Atoi(m[2])
	if head, tail := m[1], m[3]; len(head) > runOutputKept || len(tail) > runOutputKept || len(head)+cut+len(tail) != total {
		t.Errorf("kept %d bytes of head and %d of tail and cut %d, of %d; want at most %d each, and all counted",
			len(head), len(tail), cut, total, runOutputKept)
	}
}

func TestParamsReachInsmod(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	ko := r.ko("hello")
	r.builder.steps = []buildStep{ko}
	r.cfg.Params = []string{"a=1", "b=x y"}
	if err := r.once(); err != nil {
		t.Fatal(err)
	}
	if want := remote(ko.ko) + " a=1 b=x y"; r.guest.reloads[0] != want {
		t.Errorf("reload %q, want %q", r.guest.reloads[0], want)
	}
}

func TestVermagic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		vermagic string
		ok       bool
	}{
		{fakeRelease + " SMP preempt mod_unload ", true},
		{fakeRelease, true},
		{"6.1.0-other SMP preempt mod_unload ", false},
		{fakeRelease + "-rt SMP", false},
	}
	for _, tt := range tests {
		t.Run(tt.vermagic, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, true)
			r.builder.steps = []buildStep{{ko: buildertest.WriteKO(t, t.TempDir(), "hello", tt.vermagic)}}
			err := r.once()
			if tt.ok {
				if err != nil {
					t.Fatalf("Run --once = %v:%s", err, r.events)
				}
				return
			}
			if !errors.Is(err, ErrFailed) {
				t.Fatalf("Run --once = %v, want ErrFailed", err)
			}
			e := r.events.wait(t, "load_failed", 1)
			if !strings.Contains(e.Message, "built for kernel") || !strings.Contains(e.Hint, "--kdir /lib/modules/"+fakeRelease+"/build") {
				t.Errorf("load_failed = %q / %q, want the mismatch and the --kdir hint", e.Message, e.Hint)
			}
			if len(r.guest.uploads) != 0 {
				t.Error("a module for another kernel was uploaded")
			}
		})
	}
}

func TestUploadFails(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.uploadErr = errors.New("sftp: disk full")
	if e := r.onceFails(); !strings.Contains(e.Message, "uploading hello.ko: sftp: disk full") {
		t.Errorf("load_failed message %q", e.Message)
	}
	if r.guest.reloadCount() != 0 {
		t.Error("reloaded after a failed upload")
	}
}

// kwatch does not exit before the last build wrote all its records.
func TestRunSettlesTheBuilder(t *testing.T) {
	t.Parallel()
	for _, once := range []bool{true, false} {
		r := newRig(t, true)
		if once {
			if err := r.once(); err != nil {
				t.Fatal(err)
			}
		} else {
			r.start()
			r.events.wait(t, "loaded", 1)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.builder.order(); got[len(got)-1] != "settle" {
			t.Errorf("once=%v: the builder saw %q, want a settle last", once, got)
		}
	}
}

func TestLastGoodKeptInStateDir(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	ko := r.ko("hello")
	r.builder.steps = []buildStep{ko}
	if err := r.once(); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(ko.ko)
	got, err := os.ReadFile(filepath.Join(r.cfg.StateDir, "last-good", "hello.ko"))
	if err != nil || string(got) != string(want) {
		t.Errorf("last-good copy: %v (same bytes: %v)", err, string(got) == string(want))
	}
}

func TestWatchLoadsEverySave(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.events.wait(t, "loaded", 1)
	r.watch.save(t, "hello.c")
	r.events.wait(t, "loaded", 2)
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
}

// obj-m := hello.o other.o: kwatch says once which module it loads and how
// to choose another.
func TestSeveralModulesNamedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	ko := r.ko("hello")
	ko.modules = []string{"hello", "other"}
	r.builder.steps = []buildStep{ko}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.watch.save(t, "hello.c")
	r.events.wait(t, "loaded", 2)
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
	var told []string
	for _, e := range r.events.of("notice") {
		if strings.Contains(e.Message, "modules") {
			told = append(told, e.Message)
		}
	}
	want := "obj-m builds 2 modules (hello, other); kwatch loads hello only: --module NAME loads another"
	if len(told) != 1 || told[0] != want {
		t.Errorf("notices about the modules: %q, want once %q", told, want)
	}
}

func TestBuildFailureKeepsOldModule(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	good := r.ko("hello")
	r.builder.steps = []buildStep{good, {err: errBuild}}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.watch.save(t, "hello.c")
	r.events.wait(t, "build_failed", 1)
	if got := loadedIn(r.guest, "hello"); got != remote(good.ko) {
		t.Errorf("after a failed build %q is loaded, want the old %q", got, remote(good.ko))
	}
	if n := r.guest.reloadCount(); n != 1 {
		t.Errorf("%d reloads, want 1: a failed build must not touch the guest", n)
	}
}

// A build that fails to load: the last good build goes back in.
func TestFailedLoadRestoresLastGood(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	good, bad := r.ko("hello"), r.ko("hello")
	r.builder.steps = []buildStep{good, bad}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.set(func(g *fakeGuest) {
		g.reload = insmodFails("hello.ko", "insmod: ERROR: could not insert module: Unknown symbol in module")
	})
	r.watch.save(t, "hello.c")
	e := r.events.wait(t, "load_failed", 1)
	if !strings.Contains(e.Message, "(the previous build was loaded again)") {
		t.Errorf("load_failed %q does not say the previous build is back", e.Message)
	}
	if got := loadedIn(r.guest, "hello"); got != fakeUploadDir+"/good-hello.ko" {
		t.Errorf("loaded %q, want the last good copy", got)
	}
	r.lastUploadStripped(t)
}

func TestFailedLoadWithoutGoodBuild(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.reload = insmodFails("hello", "insmod: ERROR: could not insert module: Operation not permitted")
	r.start()
	e := r.events.wait(t, "load_failed", 1)
	if strings.Contains(e.Message, "loaded again") {
		t.Errorf("load_failed %q claims a previous build that never loaded", e.Message)
	}
	if n := r.guest.reloadCount(); n != 1 {
		t.Errorf("%d reloads, want 1", n)
	}
}

// The kernel's explanation of a failed insmod, read from its log, is the cause shown.
func TestFailedLoadExplainedByKernelLog(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.reload = func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		b.logf("hello: Unknown symbol missing_fn (err -2)")
		return guest.ReloadResult{LoadErr: "insmod: ERROR: could not insert module hello.ko: Unknown symbol in module"}, nil
	}
	if e := r.onceFails(); !strings.Contains(e.Message, "unknown symbol missing_fn") {
		t.Errorf("load_failed %q does not name the symbol from the kernel log", e.Message)
	}
}

// A module in use: the new build waits and loads once the module is free.
func TestHeldModuleRetriedWhenFreed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, true)
		first, second := r.ko("hello"), r.ko("hello")
		r.builder.steps = []buildStep{first, second}
		r.start()
		r.events.wait(t, "loaded", 1)
		e := r.saveHeld(t, "rmmod: ERROR: Module hello is in use", guest.ModuleUse{Refcnt: 1, InitState: "live", Openers: []string{"pid 7 (cat) has /dev/hello open"}})
		if !strings.Contains(e.Message, "in use (refcount 1)") || !slices.Equal(e.Holders, []string{"pid 7 (cat) has /dev/hello open"}) ||
			!strings.Contains(e.Hint, "as soon as it is free") {
			t.Errorf("load_failed = %q %q %v", e.Message, e.Hint, e.Holders)
		}
		idle(50 * time.Millisecond) // a few ticks: still held, no retry
		if n := r.guest.reloadCount(); n != 2 {
			t.Errorf("%d reloads while the module is held, want 2", n)
		}
		r.guest.set(func(g *fakeGuest) {
			g.use = guest.ModuleUse{Refcnt: 0, InitState: "live"}
			g.reload = newFakeGuest(true).reload
		})
		r.events.notice(t, "hello is free now: loading the new build")
		r.events.wait(t, "loaded", 2)
		if got := loadedIn(r.guest, "hello"); got != remote(second.ko) {
			t.Errorf("loaded %q, want the new build", got)
		}
	})
}

func TestHeldModuleOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.alreadyLoaded("rmmod: ERROR: Module hello is in use", guest.ModuleUse{Refcnt: 2, InitState: "live", Holders: []string{"hello_user"}})
	e := r.onceFails()
	if e.Hint != "close what holds it and run again" || !slices.Equal(e.Holders, []string{"module hello_user uses it"}) {
		t.Errorf("load_failed = %q %v", e.Hint, e.Holders)
	}
}

// rmmod refused, but nothing holds the module (no module_exit, say).
func TestUnloadRefusedNotHeld(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, true)
		r.alreadyLoaded("rmmod: ERROR: could not remove module hello: Device or resource busy", guest.ModuleUse{Refcnt: 0, InitState: "live"})
		r.start()
		e := r.events.wait(t, "load_failed", 1)
		if !strings.HasPrefix(e.Message, "rmmod: ") {
			t.Errorf("load_failed %q, want the rmmod cause", e.Message)
		}
		idle(50 * time.Millisecond)
		if n := r.guest.reloadCount(); n != 1 {
			t.Errorf("%d reloads, want 1: a module nobody holds is not retried", n)
		}
	})
}

// A newer build replaces one that waits for its module to be freed.
func TestHeldBuildReplacedBySave(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, true)
		first, second, third := r.ko("hello"), r.ko("hello"), r.ko("hello")
		r.builder.steps = []buildStep{first, second, third}
		r.start()
		r.events.wait(t, "loaded", 1)
		r.saveHeld(t, "rmmod: ERROR: Module hello is in use", guest.ModuleUse{Refcnt: 1, InitState: "live"})
		r.guest.set(func(g *fakeGuest) {
			g.reload = newFakeGuest(true).reload
			g.use = guest.ModuleUse{Refcnt: 0, InitState: "live"}
		})
		r.watch.save(t, "hello.c")
		r.events.wait(t, "loaded", 2)
		idle(50 * time.Millisecond)
		if got := loadedIn(r.guest, "hello"); got != remote(third.ko) {
			t.Errorf("loaded %q, want the newest build", got)
		}
		if len(r.events.of("loaded")) != 2 {
			t.Errorf("the replaced build was loaded too:%s", r.events)
		}
	})
}

// A module stuck in its init: a managed VM is restarted and the build loaded there.
func TestStuckModuleRestartsManagedVM(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.ko("hello"), r.ko("hello")}
	r.start()
	r.events.wait(t, "loaded", 1)
	e := r.saveHeld(t, "rmmod: ERROR: Module hello is busy", guest.ModuleUse{Refcnt: 0, InitState: "coming"})
	if !strings.Contains(e.Message, "stuck (initstate coming)") || e.Hint != "kwatch restarts the VM and loads the new build" {
		t.Errorf("load_failed = %q / %q", e.Message, e.Hint)
	}
	r.guest.set(func(g *fakeGuest) { g.reload = newFakeGuest(true).reload })
	r.events.notice(t, "restarting the VM before loading: module hello is stuck")
	r.events.wait(t, "loaded", 2)
	if n := r.guest.restartCount(); n != 1 {
		t.Errorf("%d restarts, want 1", n)
	}
}

// Issue 9 item 12: an unmanaged guest cannot be restarted by kwatch, so a stuck
// module is reported once with the fix, and not retried every second.
func TestStuckModuleUnmanagedStopsRetrying(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, false)
		r.alreadyLoaded("rmmod: ERROR: Module hello is busy", guest.ModuleUse{Refcnt: 0, InitState: "coming"})
		r.start()
		e := r.events.wait(t, "load_failed", 1)
		if !strings.Contains(e.Hint, "reboot the guest") || strings.Contains(e.Hint, "kwatch restarts") {
			t.Errorf("hint %q, want it to say the guest must be rebooted", e.Hint)
		}
		idle(100 * time.Millisecond) // ten ticks
		if n := r.guest.reloadCount(); n != 1 {
			t.Errorf("%d reloads, want 1: a stuck module in an unmanaged guest is retried", n)
		}
		if n := r.guest.restartCount(); n != 0 {
			t.Errorf("kwatch restarted a guest it does not manage")
		}
	})
}

func TestFailedInitStuckModule(t *testing.T) {
	t.Parallel()
	for _, managed := range []bool{true, false} {
		r := newRig(t, managed)
		r.guest.reload = insmodFails("hello", "insmod: ERROR: could not insert module hello.ko: Cannot allocate memory")
		r.guest.use = guest.ModuleUse{Refcnt: 0, InitState: "going"}
		e := r.onceFails()
		want := "the VM is restarted before the next load"
		if !managed {
			want = "until the guest is rebooted"
		}
		if !strings.Contains(e.Message, want) {
			t.Errorf("managed %v: load_failed %q, want %q", managed, e.Message, want)
		}
	}
}

// An oopsed guest (taint D) is restarted before the next load.
func TestTaintedGuestRestartedBeforeLoad(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.set(func(g *fakeGuest) { g.taint = taintD })
	r.watch.save(t, "hello.c")
	r.events.notice(t, "restarting the VM before loading: its kernel oopsed (taint D)")
	r.guest.set(func(g *fakeGuest) { g.taint = 0 })
	r.events.wait(t, "loaded", 2)
	if n := r.guest.restartCount(); n != 1 {
		t.Errorf("%d restarts, want 1", n)
	}
}

func TestTaintedUnmanagedGuestWarnsOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, false)
	r.guest.taint = taintD
	r.start()
	r.events.wait(t, "loaded", 1)
	r.watch.save(t, "hello.c")
	r.events.wait(t, "loaded", 2)
	var warnings int
	for _, e := range r.events.of("notice") {
		if strings.Contains(e.Message, "reboot it yourself") {
			warnings++
		}
	}
	if warnings != 1 || r.guest.restartCount() != 0 {
		t.Errorf("%d warnings and %d restarts, want one warning per boot and no restart:%s", warnings, r.guest.restartCount(), r.events)
	}
}

func TestSilentGuest(t *testing.T) {
	t.Parallel()
	t.Run("managed: restarted", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, true)
		r.guest.taintErr = errors.New("ssh: session timed out")
		r.start()
		r.events.notice(t, "restarting the VM before loading: it does not answer over SSH")
		r.guest.set(func(g *fakeGuest) { g.taintErr = nil })
		r.events.wait(t, "loaded", 1)
	})
	t.Run("unmanaged: the load fails", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, false)
		r.guest.taintErr = errors.New("ssh: session timed out")
		if e := r.onceFails(); !strings.Contains(e.Message, "the guest does not answer") {
			t.Errorf("load_failed %q", e.Message)
		}
	})
}

// A crash report in the kernel log marks the guest dirty: restart before the next load.
func TestCrashReportRestartsBeforeNextLoad(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.kernelLog(oops...)
	e := r.events.wait(t, "crash", 1)
	if e.InModule == nil || !*e.InModule || e.UserModule != "hello" {
		t.Errorf("crash event not blamed on hello: %+v", e)
	}
	r.watch.save(t, "hello.c")
	r.events.notice(t, "restarting the VM before loading: oops: BUG: kernel NULL pointer dereference")
	r.events.wait(t, "loaded", 2)
}

// The VM dies while the module loads (a panic in its init): the load fails,
// and the last good build goes into the new boot.
func TestVMDiedMidReload(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.ko("hello"), r.ko("hello")}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.set(func(g *fakeGuest) {
		g.reload = func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
			if strings.HasPrefix(path.Base(remote), "good-") {
				b.loaded[name] = remote
				return guest.ReloadResult{}, nil
			}
			g.running = false
			b.end()
			return guest.ReloadResult{}, errors.New("ssh: connection lost")
		}
	})
	r.watch.save(t, "hello.c")
	e := r.events.wait(t, "load_failed", 1)
	if e.Message != "the guest died while loading hello" {
		t.Errorf("load_failed %q", e.Message)
	}
	r.events.notice(t, "the guest restarted; loaded the last good hello again")
	if got := loadedIn(r.guest, "hello"); got != fakeUploadDir+"/good-hello.ko" {
		t.Errorf("loaded %q in the new boot, want the last good copy", got)
	}
}

func TestCrashDuringFirstLoad(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.reload = func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		b.g.running = false
		b.end()
		return guest.ReloadResult{}, errors.New("ssh: connection lost")
	}
	if err := r.once(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Run --once = %v", err)
	}
	r.events.wait(t, "load_failed", 1)
	for _, e := range r.events.of("notice") {
		if strings.Contains(e.Message, "last good") {
			t.Errorf("notice %q, but nothing ever loaded cleanly", e.Message)
		}
	}
}

// The guest restarted between builds (its owner rebooted a VM that died or
// went silent): the last good build is loaded into it.
func TestRestartedGuestGetsLastGood(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.reboot()
	r.events.notice(t, "the guest restarted; loaded the last good hello again")
	if got := loadedIn(r.guest, "hello"); got != fakeUploadDir+"/good-hello.ko" {
		t.Errorf("loaded %q, want the last good copy", got)
	}
	r.lastUploadStripped(t)
}

// ... unless the last good build is what crashed it.
func TestRestartedGuestNotGivenTheModuleThatCrashedIt(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.kernelLog(oops...)
	r.events.wait(t, "crash", 1)
	r.guest.reboot()
	r.events.notice(t, "not loading hello again, it crashed the guest")
	if got := loadedIn(r.guest, "hello"); got != "" {
		t.Errorf("%q loaded into the new boot", got)
	}
}

func TestUnmanagedRebootLeftAlone(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, false)
		r.start()
		r.events.wait(t, "loaded", 1)
		r.guest.reboot()
		idle(100 * time.Millisecond)
		if n := r.guest.reloadCount(); n != 1 {
			t.Errorf("%d reloads, want 1: kwatch loads nothing into an unmanaged guest on its own", n)
		}
	})
}

// A save during a build cancels it; only the newest sources are loaded.
func TestBuildCancelledBySave(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, true)
		block := make(chan struct{})
		newest := r.ko("hello")
		r.builder.steps = []buildStep{{ko: newest.ko, block: block}, newest}
		r.start()
		r.events.wait(t, "build_start", 1)
		r.watch.save(t, "hello.c")
		r.events.wait(t, "loaded", 1)
		if n := r.builder.count(); n != 2 {
			t.Errorf("%d builds, want 2", n)
		}
		if len(r.events.of("build_failed")) != 0 {
			t.Errorf("the cancelled build was reported as failed:%s", r.events)
		}
		close(block)
		idle(50 * time.Millisecond)
		if n := len(r.events.of("loaded")); n != 1 {
			t.Errorf("%d loads, want 1", n)
		}
	})
}

// Sources rewritten during a build: the build is done again, nothing reported as failed.
func TestSourcesChangedDuringBuild(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{{err: builder.ErrSourcesChanged}, r.ko("hello")}
	if err := r.once(); err != nil {
		t.Fatalf("Run --once = %v:%s", err, r.events)
	}
	if n := r.builder.count(); n != 2 {
		t.Errorf("%d builds, want 2", n)
	}
}

func TestConfigChangedBeforeRebuild(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	calls := make(chan int, 10)
	r.cfg.ConfigChanged = func(ctx context.Context) error {
		calls <- r.builder.count()
		return nil
	}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.watch.save(t, "hello.c")
	r.events.wait(t, "loaded", 2)
	r.watch.save(t, "module.nix")
	r.events.wait(t, "loaded", 3)
	if len(calls) != 1 || <-calls != 2 {
		t.Errorf("ConfigChanged called %d times, want once, before the third build", len(calls)+1)
	}
}

func TestWatcherErrorsAreNotices(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.start()
	r.watch.errors <- errors.New("the watch limit is reached")
	r.events.notice(t, "the watch limit is reached")
}

func TestCancelDuringBuild(t *testing.T) {
	t.Parallel()
	r := newRig(t, true, buildStep{block: make(chan struct{})})
	r.start()
	r.events.wait(t, "build_start", 1)
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if len(r.events.of("build_failed")) != 0 {
		t.Errorf("a cancelled build was reported as failed")
	}
}

// The kernel log streams as events; what was logged before kwatch attached and
// kwatch's own marks are not shown.
func TestKernelLogStreamed(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.guest.Session(context.Background())
	r.guest.kernelLog("from before kwatch")
	r.start()
	r.events.wait(t, "loaded", 1)
	r.guest.kernelLog("hello: hi from the module")
	r.events.waitFor(t, "the module's message", func() (event.Event, bool) {
		for _, e := range r.events.of("kmsg") {
			if e.Message == "hello: hi from the module" {
				return e, true
			}
		}
		return event.Event{}, false
	})
	for _, e := range r.events.of("kmsg") {
		if strings.Contains(e.Message, "from before kwatch") || strings.HasPrefix(e.Message, markPrefix) {
			t.Errorf("kmsg event %q should not be shown", e.Message)
		}
	}
}

// The module's init messages come before its loaded line.
func TestLoadWaitsForKernelLog(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	if err := r.once(); err != nil {
		t.Fatal(err)
	}
	r.events.mu.Lock()
	defer r.events.mu.Unlock()
	initAt, loadedAt := -1, -1
	for i, e := range r.events.all {
		switch {
		case e.Type == "kmsg" && strings.HasPrefix(e.Message, "hello: loaded from"):
			initAt = i
		case e.Type == "loaded":
			loadedAt = i
		}
	}
	if initAt < 0 || initAt > loadedAt {
		t.Errorf("init message at %d, loaded at %d: want the init message first", initAt, loadedAt)
	}
}

// The correctness net's check of a fast build waits until the guest is idle:
// a save during the load starts the next build, and no check begins; once no
// save comes for a while, the check of the last fast build begins.
func TestCheckWaitsForIdle(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.fastKO("hello"), r.fastKO("hello")}
	r.builder.check = func(ctx context.Context) (*builder.Mismatch, error) { return nil, nil }
	reload := r.guest.reload
	r.guest.reload = func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		if len(b.g.reloads) == 1 { // a save during the first load
			go func() { r.watch.batches <- watcher.Batch{Changed: []string{"hello.c"}} }()
		}
		return reload(b, name, remote)
	}
	r.start()
	r.events.wait(t, "loaded", 2)
	r.builder.waitBegun(t, "check")
	if got, want := r.builder.order(), []string{"build", "build", "check"}; !slices.Equal(got, want) {
		t.Errorf("began %q, want %q", got, want)
	}
}

// A mismatch the correctness net found comes while the next build runs: it
// is reported, but make's module is not loaded, as that build rewrites it.
func TestMismatchDuringBuildOnlyReported(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, true)
		block := make(chan struct{})
		r.builder.steps = []buildStep{r.fastKO("hello"), {ko: r.ko("hello").ko, block: block}}
		found := make(chan struct{})
		makes := r.ko("hello").ko
		r.builder.check = func(ctx context.Context) (*builder.Mismatch, error) {
			<-found
			return &builder.Mismatch{KO: makes, Sections: []string{".text"}}, nil
		}
		r.start()
		r.events.wait(t, "loaded", 1)
		r.builder.waitBegun(t, "check")
		r.watch.save(t, "hello.c")
		r.events.wait(t, "build_start", 2)
		close(found)
		r.events.wait(t, event.KindFastPathBug, 1)
		close(block)
		r.events.wait(t, "loaded", 2)
		idle(50 * time.Millisecond)
		if n := r.guest.reloadCount(); n != 2 {
			t.Errorf("%d reloads, want 2 (the two builds'): make's module was loaded while a build ran", n)
		}
	})
}

// depsKO is a module hello whose .modinfo says it needs videodev (and,
// softly, crc32c first).
func (r *rig) depsKO() buildStep {
	p := filepath.Join(r.t.TempDir(), "hello.ko")
	modinfo := "license=GPL\x00name=hello\x00depends=videodev\x00softdep=pre: crc32c\x00vermagic=" + fakeRelease + " SMP preempt mod_unload \x00"
	if err := os.WriteFile(p, buildertest.ELFWith(".modinfo", []byte(modinfo)), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return buildStep{ko: p}
}

func (g *fakeGuest) depLoadCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.depLoads)
}

// A module's dependencies are loaded before it, once per boot: not again on
// a save, again after the guest restarted.
func TestDependenciesLoadedOncePerBoot(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.depsKO()}
	r.guest.kernelMods = map[string]bool{"videodev": true, "crc32c": true}
	r.start()
	r.events.wait(t, "loaded", 1)
	r.events.notice(t, "loaded crc32c, videodev in the guest first: hello needs them")
	if got := loadedIn(r.guest, "videodev"); got == "" {
		t.Fatal("videodev not loaded")
	}
	r.guest.mu.Lock()
	got := r.guest.depLoads
	r.guest.mu.Unlock()
	if want := [][]string{{"videodev", "crc32c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("LoadDeps calls = %v, want %v", got, want)
	}

	r.watch.save(t, "hello.c")
	r.events.wait(t, "loaded", 2)
	if n := r.guest.depLoadCount(); n != 1 {
		t.Errorf("%d LoadDeps calls after a save, want 1: once per boot", n)
	}

	r.guest.reboot()
	r.events.notice(t, "the guest restarted; loaded the last good hello again")
	if n := r.guest.depLoadCount(); n != 2 {
		t.Errorf("%d LoadDeps calls after a restart, want 2", n)
	}
	if loadedIn(r.guest, "videodev") == "" {
		t.Error("videodev not loaded again after the restart")
	}
}

// A module that needs nothing asks nothing of the guest.
func TestNoDependenciesNoCall(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	if err := r.once(); err != nil {
		t.Fatal(err)
	}
	if n := r.guest.depLoadCount(); n != 0 {
		t.Errorf("%d LoadDeps calls for a module without dependencies", n)
	}
}

// A dependency the guest's kernel does not have: one error naming it, and
// the module loaded before stays loaded (nothing was unloaded).
func TestMissingDependencyKeepsPreviousModule(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.ko("hello"), r.depsKO()}
	r.guest.kernelMods = map[string]bool{"crc32c": true}
	r.start()
	r.events.wait(t, "loaded", 1)
	before := loadedIn(r.guest, "hello")
	r.watch.save(t, "hello.c")
	e := r.events.wait(t, "load_failed", 1)
	if !strings.Contains(e.Message, "videodev") || e.Hint == "" {
		t.Errorf("load_failed = %q (hint %q), want it to name videodev, with a hint", e.Message, e.Hint)
	}
	if got := loadedIn(r.guest, "hello"); got != before {
		t.Errorf("hello is %q after the failed load, want the previous %q", got, before)
	}
	if n := r.guest.reloadCount(); n != 1 {
		t.Errorf("%d reloads, want 1: no rmmod when a dependency is missing", n)
	}
}

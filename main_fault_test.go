package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault suite: what kernel work does to a guest, and what kwatch must do
// about it. The modules are in testdata/faults/NAME/, all named kwfault so
// that a fault replaces a good build of the same module.

// useFault copies testdata/faults/name into dir, replacing the module there.
func useFault(t *testing.T, dir, name string) {
	t.Helper()
	copyDir(t, filepath.Join("testdata/faults", name), dir)
}

// expectLoaded waits for the cycle's end and fails unless it loaded.
func (w *watchProc) expectLoaded(timeout time.Duration) []jsonEvent {
	w.t.Helper()
	evs := w.next(timeout, "loaded", "load_failed", "build_failed")
	if last := evs[len(evs)-1]; last.Event != "loaded" {
		w.t.Fatalf("cycle ended with %+v", last)
	}
	return evs
}

func guestVersion(t *testing.T, state string) string {
	t.Helper()
	return strings.TrimSpace(guestRun(t, state, "cat /sys/module/kwfault/version"))
}

// Faults that kill or taint the guest, in one kwatch run on its own VM per
// kernel: a panic, an oops, qemu killed from outside, the guest's SSH server
// killed.
func TestFaultsThatKillTheGuest(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		state := filepath.Join(t.TempDir(), "state")
		t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
		dir := t.TempDir()
		writeModule(t, dir, "kwfault", 1)
		w := startWatch(t, append(e2eVM{v.Kernel, state}.args(), dir)...)
		w.expectLoaded(3 * time.Minute)

		t.Run("panic in init", func(t *testing.T) {
			w.t = t
			pid := vmPID(t, state)
			useFault(t, dir, "panic")
			evs := w.next(3*time.Minute, "notice")
			for !strings.Contains(evs[len(evs)-1].Message, "loaded the last good kwfault again") {
				evs = append(evs, w.next(3*time.Minute, "notice")...)
			}
			c := findCrash(t, evs, "panic")
			if !strings.Contains(c.Title, "kwatch test") {
				t.Errorf("panic title %q does not carry the panic message", c.Title)
			}
			if _, ok := findEvent(evs, "load_failed"); !ok {
				t.Errorf("no load_failed for the build that panicked: %+v", evs)
			}
			if vmPID(t, state) == pid {
				t.Error("the VM was not restarted")
			}
			if v := guestVersion(t, state); v != "1" {
				t.Errorf("after the panic the guest runs version %q, want the last good 1", v)
			}
		})

		t.Run("NULL dereference in init", func(t *testing.T) {
			w.t = t
			useFault(t, dir, "oops")
			evs := w.next(2*time.Minute, "load_failed")
			if _, ok := findEvent(evs, "crash"); !ok {
				evs = append(evs, w.next(time.Minute, "crash")...)
			}
			if c := findCrash(t, evs, "oops"); c.Severity != "oops" || c.InModule == nil || !*c.InModule {
				t.Errorf("crash event %+v, want severity oops in kwfault", c)
			}
			pid := vmPID(t, state)
			// The guest is dirty: the next reload restarts it first.
			writeModule(t, dir, "kwfault", 2)
			evs = w.expectLoaded(3 * time.Minute)
			if !hasNotice(evs, "restarting the VM before loading") {
				t.Errorf("no restart notice before the next load: %+v", evs)
			}
			if vmPID(t, state) == pid {
				t.Error("the dirty VM was not restarted")
			}
			if v := guestVersion(t, state); v != "2" {
				t.Errorf("guest runs version %q, want 2", v)
			}
		})

		t.Run("qemu killed", func(t *testing.T) {
			w.t = t
			pid := vmPID(t, state)
			if err := syscall.Kill(qemuPID(t, state), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitNotice(w, 3*time.Minute, "loaded the last good kwfault again")
			if vmPID(t, state) == pid {
				t.Error("the VM was not restarted")
			}
			if v := guestVersion(t, state); v != "2" {
				t.Errorf("after the restart the guest runs version %q, want 2", v)
			}
		})

		t.Run("ssh server killed", func(t *testing.T) {
			w.t = t
			pid := vmPID(t, state)
			// The command's own session dies with dropbear: ignore its exit.
			kwatchRun(t, "vm", "ssh", "--state-dir", state, "--", "killall dropbear")
			waitNotice(w, 3*time.Minute, "its SSH server has not answered")
			waitNotice(w, 3*time.Minute, "loaded the last good kwfault again")
			if vmPID(t, state) == pid {
				t.Error("the VM was not restarted")
			}
			if v := guestVersion(t, state); v != "2" {
				t.Errorf("after the restart the guest runs version %q, want 2", v)
			}
		})
		w.t = t
		w.stop()
		noStrayProcesses(t, dir)
	})
}

// qemuPID returns the pid of the VM's QEMU: the recorded pid is the console
// keeper's, and QEMU is its child.
func qemuPID(t *testing.T, state string) int {
	t.Helper()
	pid := vmPID(t, state)
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	child, _ := strconv.Atoi(strings.TrimSpace(string(children)))
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child)); !strings.HasPrefix(string(comm), "qemu") {
		t.Fatalf("the VM's process %d has child %q (%s), want QEMU", pid, children, comm)
	}
	return child
}

func findCrash(t *testing.T, evs []jsonEvent, severity string) jsonEvent {
	t.Helper()
	for _, e := range evs {
		if e.Event == "crash" && e.Severity == severity {
			return e
		}
	}
	t.Fatalf("no crash event with severity %s in %+v", severity, evs)
	return jsonEvent{}
}

func hasNotice(evs []jsonEvent, text string) bool {
	for _, e := range evs {
		if e.Event == "notice" && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

func waitNotice(w *watchProc, timeout time.Duration, text string) []jsonEvent {
	w.t.Helper()
	var all []jsonEvent
	deadline := time.Now().Add(timeout)
	for {
		evs := w.next(time.Until(deadline), "notice")
		all = append(all, evs...)
		if hasNotice(evs, text) {
			return all
		}
	}
}

// Faults the guest survives, on the shared VM: init returning -ENODEV, a
// WARN_ON, a build error, a module held open by a guest process.
func TestFaultsTheGuestSurvives(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeModule(t, dir, "kwfault", 1)
	w := startWatch(t, append(vmArgs(e2eState), dir)...)
	w.expectLoaded(3 * time.Minute)
	pid := vmPID(t, e2eState)

	useFault(t, dir, "enodev")
	evs := w.next(time.Minute, "load_failed", "loaded")
	if e := evs[len(evs)-1]; e.Event != "load_failed" || !strings.Contains(e.Message, "ENODEV") ||
		!strings.Contains(e.Message, "previous build was loaded again") {
		t.Errorf("-ENODEV: got %+v", e)
	}
	if v := guestVersion(t, e2eState); v != "1" {
		t.Errorf("after -ENODEV the guest runs version %q, want 1", v)
	}

	useFault(t, dir, "warn")
	evs = w.expectLoaded(time.Minute)
	if _, ok := findEvent(evs, "crash"); !ok {
		evs = append(evs, w.next(30*time.Second, "crash")...)
	}
	c := findCrash(t, evs, "warning")
	if c.InModule == nil || !*c.InModule {
		t.Errorf("WARN_ON crash event %+v, want in_module", c)
	}
	// testdata/faults/warn/kwfault.c has its WARN_ON on line 4.
	if want := filepath.Join(dir, "kwfault.c") + ":4"; c.Source != want {
		t.Errorf("WARN_ON crash event's source is %q, want %q", c.Source, want)
	}

	useFault(t, dir, "builderr")
	evs = w.next(time.Minute, "build_failed", "loaded", "load_failed")
	if e := evs[len(evs)-1]; e.Event != "build_failed" || len(e.Diagnostics) == 0 || !strings.HasPrefix(e.Diagnostics[0], "kwfault.c:3:") {
		t.Errorf("build error: got %+v", e)
	}

	useFault(t, dir, "hold")
	w.expectLoaded(time.Minute)
	guestRun(t, e2eState, "sleep 1000 < /dev/kwfault > /dev/null 2>&1 &")
	src, _ := os.ReadFile(filepath.Join(dir, "kwfault.c"))
	writeFile(t, filepath.Join(dir, "kwfault.c"), strings.Replace(string(src), `KWFAULT_VERSION "1"`, `KWFAULT_VERSION "2"`, 1))
	evs = w.next(time.Minute, "load_failed", "loaded")
	e := evs[len(evs)-1]
	if e.Event != "load_failed" || !strings.Contains(e.Message, "in use") || len(e.Holders) == 0 ||
		!strings.Contains(e.Holders[0], "(sleep) has /dev/kwfault open") {
		t.Fatalf("held module: got %+v", e)
	}
	guestRun(t, e2eState, "killall sleep")
	w.expectLoaded(time.Minute)
	if v := guestVersion(t, e2eState); v != "2" {
		t.Errorf("after the holder went the guest runs version %q, want 2", v)
	}
	if vmPID(t, e2eState) != pid {
		t.Error("the VM was restarted, but nothing here needed it")
	}
	w.stop()
	noStrayProcesses(t, dir)
}

// Faults of the edit side: save storms, edits during a build, files in new
// directories; all against the shared VM.
func TestFaultsOfEditing(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeModule(t, dir, "kwedit", 1)
	w := startWatch(t, append(vmArgs(e2eState), dir)...)
	w.expectLoaded(3 * time.Minute)
	version := func() string {
		return strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/kwedit/version"))
	}

	// buildsUntilLoaded counts build starts until the next load.
	buildsUntilLoaded := func() (builds int, evs []jsonEvent) {
		t.Helper()
		for {
			seen := w.next(2*time.Minute, "loaded", "build_start", "build_failed", "load_failed")
			evs = append(evs, seen...)
			switch e := seen[len(seen)-1]; e.Event {
			case "build_start":
				builds++
			case "loaded":
				return builds, evs
			default:
				t.Fatalf("cycle ended with %+v", e)
			}
		}
	}

	t.Run("30 saves per second for 3s", func(t *testing.T) {
		extra := saveStorm(t, 90, func(i int) { writeModule(t, dir, "kwedit", 200+i) })
		// The first save's build, and the 1s batch cap closes about three
		// batches of the rest (two counted in extra); each cancels the
		// build before it, and the one after the storm may add one more. A
		// build may also finish, and load, between two batches of the storm:
		// follow the loads until the last save's content is the one running.
		builds := 0
		for got := ""; got != "289"; got = version() {
			if builds > 3+extra {
				t.Fatalf("90 saves in 3s (%d batches more than the first) started %d builds and the guest runs version %q, want at most %d builds ending in 289", extra, builds, got, 3+extra)
			}
			n, _ := buildsUntilLoaded()
			builds += n
		}
		if builds > 3+extra {
			t.Errorf("90 saves in 3s (%d batches more than the first) started %d builds, want at most %d", extra, builds, 3+extra)
		}
	})

	t.Run("change during a build", func(t *testing.T) {
		// A module slow enough to build that the second save lands mid-build.
		slow := strings.Repeat("static int __maybe_unused pad%d(void) { return %d; }\n", 1)
		var pad strings.Builder
		for i := 0; i < 3000; i++ {
			fmt.Fprintf(&pad, slow, i, i)
		}
		writeFile(t, filepath.Join(dir, "pad.h"), pad.String())
		writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := kwedit.o\nCFLAGS_kwedit.o := -include $(src)/pad.h\n")
		writeModule(t, dir, "kwedit", 300)
		w.next(time.Minute, "build_start")
		time.Sleep(300 * time.Millisecond)
		writeModule(t, dir, "kwedit", 301)
		writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := kwedit.o\nCFLAGS_kwedit.o := -include $(src)/pad.h\n")
		evs := w.next(2*time.Minute, "build_start", "build_ok", "build_failed", "loaded")
		if e := evs[len(evs)-1]; e.Event != "build_start" {
			t.Fatalf("the save during the build did not restart it: got %+v", e)
		}
		w.expectLoaded(2 * time.Minute)
		if got := version(); got != "301" {
			t.Fatalf("after a change during the build the guest runs version %q, want 301", got)
		}
	})

	t.Run("file in a new subdirectory", func(t *testing.T) {
		// mkdir -p gives inotify a single CREATE of the top directory; the file
		// below must still trigger the build that needs it.
		writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := kwedit.o\nkwedit-y := main.o sub/dir/extra.o\n")
		if err := os.Rename(filepath.Join(dir, "kwedit.c"), filepath.Join(dir, "main.c")); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "pad.h"))
		writeFile(t, filepath.Join(dir, "sub/dir/extra.c"), "#include <linux/module.h>\nMODULE_VERSION(\"302\");\n")
		// main.c still declares version 301: the build with extra.c must fail
		// on the duplicate, or, once main.c drops its MODULE_VERSION, load 302.
		main, _ := os.ReadFile(filepath.Join(dir, "main.c"))
		writeFile(t, filepath.Join(dir, "main.c"), strings.Replace(string(main), "MODULE_VERSION(\"301\");\n", "", 1))
		builds, _ := buildsUntilLoaded()
		if builds == 0 {
			t.Fatal("no build")
		}
		if got := version(); got != "302" {
			t.Fatalf("the file in the new subdirectory was not built in: version %q, want 302", got)
		}
		// A later edit inside the new directory is seen too.
		writeFile(t, filepath.Join(dir, "sub/dir/extra.c"), "#include <linux/module.h>\nMODULE_VERSION(\"303\");\n")
		w.expectLoaded(time.Minute)
		if got := version(); got != "303" {
			t.Fatalf("an edit in the new subdirectory was missed: version %q, want 303", got)
		}
	})
	w.stop()
	noStrayProcesses(t, dir)
}

// Configuration errors: exit 2 and one line naming what is wrong.
func TestConfigErrors(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeModule(t, dir, "kwconf", 1)
	notKernel := filepath.Join(dir, "kwconf.c")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"kernel is not a kernel image", []string{"--vm", "qemu", "--kernel", notKernel, "--accel", "tcg", "--state-dir", filepath.Join(dir, "s1"), dir}, "kernel"},
		{"kdir without a Makefile", append(vmArgs(e2eState), "--kdir", dir, "--once", dir), "kernel build dir " + dir + " not found"},
		{"modules dir missing", []string{"--vm", "qemu", "--kernel", e2eKernel, "--modules-dir", filepath.Join(dir, "nope"), "--state-dir", filepath.Join(dir, "s2"), dir}, "--modules-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := kwatchRun(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if !strings.HasPrefix(lines[0], "kwatch: error: ") || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("first stderr line %q should be a kwatch error naming %q", lines[0], tt.want)
			}
		})
	}
	noStrayProcesses(t, dir)
}

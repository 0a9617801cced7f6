package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/guest/vm/vmtest"
	"kwatch/watcher"
)

// The CLI contract for bad input: exit 2 and one line saying what was wrong.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"missing dir", []string{filepath.Join(dir, "nope")}, "is not a directory"},
		{"two dirs", []string{dir, dir}, "too many arguments"},
		{"unknown vm", []string{"--vm", "xen", dir}, `unknown --vm "xen"`},
		{"unknown accel", []string{"--accel", "hvf", dir}, `unknown --accel "hvf"`},
		{"ssh without target", []string{"--vm", "ssh", dir}, "--vm ssh needs --ssh"},
		{"nix without flake", []string{"--vm", "nix", dir}, "needs a flake.nix"},
		{"bad debounce", []string{"--debounce", "0s", dir}, "--debounce must be positive"},
		{"negative run timeout", []string{"--run-timeout", "-1s", dir}, "--run-timeout must not be negative"},
		{"bad run timeout", []string{"--run-timeout", "5", dir}, `invalid value "5" for flag -run-timeout`},
		{"vm without subcommand", []string{"vm"}, "needs a subcommand"},
		{"vm unknown subcommand", []string{"vm", "reboot", "--state-dir", dir}, `unknown vm subcommand "reboot"`},
		{"vm ssh without vm", []string{"vm", "ssh", "--state-dir", dir, "--", "true"}, "no VM is running"},
		{"init too many", []string{"init", dir, dir}, "too many arguments"},
		{"gdb without vm", []string{"gdb", "--state-dir", dir}, "no VM is running"},
		{"gdb on an ssh machine", []string{"gdb", "--ssh", "host", "--state-dir", dir}, "not to an --ssh machine"},
		{"gdb two dirs", []string{"gdb", "--state-dir", dir, dir, dir, "--", "-batch"}, "too many arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"--state-dir", filepath.Join(dir, "state")}, tt.args...), &stdout, &stderr)
			if tt.args[0] == "vm" || tt.args[0] == "init" || tt.args[0] == "gdb" {
				err = run(context.Background(), tt.args, &stdout, &stderr)
			}
			code := exitCode(err, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2 (err %v)", code, err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tt.want)
			}
			if !strings.Contains(stderr.String(), "kwatch: error: ") {
				t.Fatalf("stderr %q has no kwatch: error: line", stderr.String())
			}
		})
	}
}

// Issue 9 item 11: what can be checked without a guest is checked before one
// boots. A directory without a Makefile/Kbuild or a bad --kdir fails at once,
// with nothing started (before, kwatch booted a VM first and left it running).
func TestBadInputBeforeBoot(t *testing.T) {
	if e2eKernel == "" {
		t.Skip("no /boot/vmlinuz-*")
	}
	mod := t.TempDir()
	writeModule(t, mod, "early", 1)
	nowhere := filepath.Join(t.TempDir(), "nope")
	watch := func(args ...string) []string { return append([]string{"--once"}, args...) }
	tests := []struct {
		name string
		args []string // after vmArgs
		want string
	}{
		{"no Makefile or Kbuild", watch(t.TempDir()), "no Makefile or Kbuild in"},
		{"bad --kdir", watch("--kdir", nowhere, mod), "kernel build dir"},
		{"nix builder without a flake", watch("--builder", "nix", mod), "--builder nix needs a flake.nix"},
		{"unknown builder", watch("--builder", "bogus", mod), `unknown --builder "bogus"`},
		{"missing kernel", watch("--kernel", nowhere, mod), "kernel image " + nowhere},
		{"missing modules dir", watch("--modules-dir", nowhere, mod), "--modules-dir " + nowhere + " does not exist"},
		{"bad --ssh port", watch("--vm", "ssh", "--ssh", "host:xx", mod), `bad port in --ssh "host:xx"`},
		{"vm up, missing kernel", []string{"--kernel", nowhere}, "kernel image " + nowhere},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			t.Cleanup(func() { exec.Command(kwatchBin, "vm", "down", "--state-dir", state).Run() })
			args := append(vmArgs(state), tt.args...)
			if strings.HasPrefix(tt.name, "vm up") {
				args = append([]string{"vm", "up"}, args...)
			}
			start := time.Now()
			_, stderr, code := kwatchRun(t, args...)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s: the error must come before a VM boots", took.Round(time.Millisecond))
			}
			if code != 2 || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "kwatch: hint: ") {
				t.Errorf("exit %d, stderr %q; want exit 2, %q and a hint", code, stderr, tt.want)
			}
			// Bad input loses nothing and leaves nothing: no VM, not even a state dir.
			if _, err := os.Stat(state); err == nil {
				t.Errorf("the state dir %s was created", state)
			}
			noStrayProcesses(t, state)
		})
	}
}

func TestParseInterleaved(t *testing.T) {
	var o options
	fs := newFlagSet("t")
	o.watchFlags(fs)
	pos, err := parseInterleaved(fs, []string{"--once", "dir", "--run", "a", "--run", "b", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 1 || pos[0] != "dir" || !o.once || !o.json || len(o.run) != 2 {
		t.Fatalf("pos %v once %v json %v run %v", pos, o.once, o.json, o.run)
	}
	// After "--" nothing is a flag: `kwatch vm ssh --state-dir s -- grep -c x f`.
	var v options
	fs = newFlagSet("t")
	v.vmFlags(fs)
	pos, err = parseInterleaved(fs, []string{"--state-dir", "s", "--", "grep", "-c", "x", "--", "f"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "grep -c x -- f" || v.stateDir != "s" {
		t.Fatalf("pos %q state dir %q", pos, v.stateDir)
	}
}

// ---- end-to-end: the real kwatch binary, a real QEMU guest, real Kbuild ----

var (
	kwatchBin string
	e2eState  string // shared state dir: one Debian 6.1 VM for the e2e tests that run on one kernel
	e2eKernel string
	e2eVMs    []e2eVM // one shared VM per installed Debian kernel series, 6.1's in e2eState
)

// e2eVM is a Debian kernel series and the state dir of its shared VM.
type e2eVM struct {
	vmtest.Kernel
	state string
}

// args are the flags a run on this VM uses.
func (v e2eVM) args() []string {
	return []string{"--vm", "qemu", "--kernel", v.Image, "--accel", "tcg", "--state-dir", v.state}
}

// eachKernel runs fn as a subtest, named by kernel series, on each
// installed Debian kernel's shared VM.
func eachKernel(t *testing.T, fn func(t *testing.T, v e2eVM)) {
	needGuest(t)
	for _, v := range e2eVMs {
		t.Run(v.Name, func(t *testing.T) { fn(t, v) })
	}
}

func TestMain(m *testing.M) {
	code := func() int {
		tmp, err := os.MkdirTemp("", "kwatch-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		kwatchBin = filepath.Join(tmp, "kwatch")
		if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", kwatchBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building kwatch: %v\n%s", err, out)
			return 1
		}
		e2eState = filepath.Join(tmp, "state")
		e2eKernel = vmtest.Oldest().Image
		for i, k := range vmtest.Debian() {
			v := e2eVM{Kernel: k, state: e2eState}
			if i > 0 {
				v.state = filepath.Join(tmp, "state-"+k.Name)
			}
			e2eVMs = append(e2eVMs, v)
		}
		// t.TempDir() dirs then live under tmp too, so the leak check below sees them.
		os.Setenv("TMPDIR", tmp)
		code := m.Run()
		for _, v := range e2eVMs {
			exec.Command(kwatchBin, "vm", "down", "--state-dir", v.state).Run()
		}
		// Every test stops what it started; a qemu or make still running
		// from this run's temp dirs is a leak.
		time.Sleep(500 * time.Millisecond)
		if stray := strayProcesses(tmp); len(stray) > 0 {
			fmt.Fprintf(os.Stderr, "processes left behind by the tests: %v\n", stray)
			return 1
		}
		return code
	}()
	os.Exit(code)
}

func needGuest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: boots a QEMU guest")
	}
	if e2eKernel == "" {
		t.Fatal("no /boot/vmlinuz-*: run scripts/setup.sh")
	}
}

// vmArgs are the flags every e2e run uses: TCG (KVM guests hang on our machines).
func vmArgs(state string) []string {
	return []string{"--vm", "qemu", "--kernel", e2eKernel, "--accel", "tcg", "--state-dir", state}
}

// writeModule writes a C module named name whose init logs "NAME: version V loaded"
// and whose /sys/module/NAME/version is V, so tests can ask the guest which build runs.
func writeModule(t *testing.T, dir, name string, version int) {
	t.Helper()
	src := fmt.Sprintf(`#include <linux/module.h>
#include <linux/init.h>
static int __init m_init(void) { pr_info("%[1]s: version %[2]d loaded\n"); return 0; }
static void __exit m_exit(void) { pr_info("%[1]s: version %[2]d unloaded\n"); }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("%[2]d");
`, name, version)
	writeFile(t, filepath.Join(dir, name+".c"), src)
	writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := "+name+".o\n")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// kwatchRun runs kwatch to completion and returns stdout, stderr and the exit code.
func kwatchRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kwatchBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kwatch %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// guestRun runs a command in the shared guest through `kwatch vm ssh`.
func guestRun(t *testing.T, state, cmd string) string {
	t.Helper()
	out, errOut, code := kwatchRun(t, "vm", "ssh", "--state-dir", state, "--", cmd)
	if code != 0 {
		t.Fatalf("guest command %q: exit %d: %s%s", cmd, code, out, errOut)
	}
	return out
}

// jsonEvent is one line of `kwatch --json`.
type jsonEvent struct {
	Event       string   `json:"event"`
	Path        string   `json:"path"`
	Module      string   `json:"module"`
	Message     string   `json:"message"`
	Diagnostics []string `json:"diagnostics"`
	Command     string   `json:"command"`
	Output      string   `json:"output"`
	Exit        *int     `json:"exit"`
	Time        time.Time
	// crash and load_failed details (main_fault_test.go)
	Severity string   `json:"severity"`
	Title    string   `json:"title"`
	InModule *bool    `json:"in_module"`
	Source   string   `json:"source"`
	Holders  []string `json:"holders"`
	Hint     string   `json:"hint"`
	// loaded
	UploadBytes int64 `json:"upload_bytes"`
	// kunit_case, kunit_summary (main_kunit_test.go)
	Suite   string `json:"suite"`
	Case    string `json:"case"`
	Status  string `json:"status"`
	Param   string `json:"param"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Passed  *int   `json:"passed"`
	Failed  int    `json:"failed"`
	Skipped int    `json:"skipped"`
	Crashed int    `json:"crashed"`
	MS      *int64 `json:"ms"`
}

func parseEvents(t *testing.T, stdout string) []jsonEvent {
	t.Helper()
	var evs []jsonEvent
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		var e jsonEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("--json printed a line that is not JSON: %q", line)
		}
		if e.Time.IsZero() {
			t.Fatalf("event without time: %q", line)
		}
		evs = append(evs, e)
	}
	return evs
}

func findEvent(evs []jsonEvent, typ string) (jsonEvent, bool) {
	for _, e := range evs {
		if e.Event == typ {
			return e, true
		}
	}
	return jsonEvent{}, false
}

// noStrayProcesses fails when a make or qemu process that mentions dir survives.
func noStrayProcesses(t *testing.T, needle string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		stray := strayProcesses(needle)
		if len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind: %v", stray)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func strayProcesses(needle string) []string {
	var stray []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		cwd, _ := os.Readlink(p + "/cwd")
		comm, _ := os.ReadFile(p + "/comm")
		name := strings.TrimSpace(string(comm))
		if name != "make" && !strings.HasPrefix(name, "qemu") && name != "cc1" && name != "nix" {
			continue
		}
		if strings.Contains(cl, needle) || strings.HasPrefix(cwd, needle) {
			stray = append(stray, fmt.Sprintf("%s %s", filepath.Base(p), cl))
		}
	}
	return stray
}

// obj-m := kwma.o kwmb.o: kwatch loads the first and says so once, with how
// to pick the other; --module picks it; a name obj-m does not build is a
// clear error before anything is loaded.
func TestSeveralModules(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeModule(t, dir, "kwmb", 2)
	writeModule(t, dir, "kwma", 1)
	writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := kwma.o kwmb.o\n")

	stdout, stderr, code := kwatchRun(t, append(vmArgs(e2eState), "--once", dir)...)
	if code != 0 {
		t.Fatalf("--once: exit %d\n%s\n%s", code, stdout, stderr)
	}
	const told = "obj-m builds 2 modules (kwma, kwmb); kwatch loads kwma only: --module NAME loads another"
	if strings.Count(stdout, told) != 1 || !strings.Contains(stdout, "kwma.ko loaded") {
		t.Fatalf("want kwma loaded and one notice %q:\n%s", told, stdout)
	}
	if got := strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/kwma/version")); got != "1" {
		t.Fatalf("guest runs kwma version %q, want 1", got)
	}

	stdout, stderr, code = kwatchRun(t, append(vmArgs(e2eState), "--once", "--module", "kwmb", dir)...)
	if code != 0 || !strings.Contains(stdout, "kwmb.ko loaded") {
		t.Fatalf("--module kwmb: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if got := strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/kwmb/version")); got != "2" {
		t.Fatalf("guest runs kwmb version %q, want 2", got)
	}

	stdout, _, code = kwatchRun(t, append(vmArgs(e2eState), "--once", "--module", "kwmc", dir)...)
	if code != 1 || !strings.Contains(stdout, "--module kwmc: obj-m does not build it (modules.order names kwma, kwmb)") {
		t.Fatalf("--module kwmc: exit %d, want 1 and an error naming both modules:\n%s", code, stdout)
	}
	guestRun(t, e2eState, "rmmod kwma kwmb")
	noStrayProcesses(t, dir)
}

func TestOnce(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := t.TempDir()
		writeModule(t, dir, "kwonce", 1)

		// A good build loads, and the --run commands' output is reported.
		stdout, stderr, code := kwatchRun(t, append(v.args(), "--once", "--json",
			"--run", "cat /sys/module/kwonce/version", "--run", "echo to-stderr >&2", dir)...)
		if code != 0 {
			t.Fatalf("--once on a good module: exit %d\n%s\n%s", code, stdout, stderr)
		}
		evs := parseEvents(t, stdout)
		if _, ok := findEvent(evs, "loaded"); !ok {
			t.Fatalf("no loaded event:\n%s", stdout)
		}
		var outs []string
		for _, e := range evs {
			if e.Event == "run_output" {
				outs = append(outs, strings.TrimSpace(e.Output))
			}
		}
		if len(outs) != 2 || outs[0] != "1" || outs[1] != "to-stderr" {
			t.Fatalf("run_output events %q, want [1 to-stderr]", outs)
		}
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/kwonce/version")); got != "1" {
			t.Fatalf("guest runs version %q, want 1", got)
		}
		loaded, _ := findEvent(evs, "loaded")
		checkStrippedUpload(t, v.state, filepath.Join(dir, "kwonce.ko"), loaded.UploadBytes)

		// A failing --run command makes --once exit 1.
		_, _, code = kwatchRun(t, append(v.args(), "--once", "--json", "--run", "exit 7", dir)...)
		if code != 1 {
			t.Fatalf("--once with a failing --run: exit %d, want 1", code)
		}

		// A build error exits 1, names the compiler's line and leaves version 1 loaded.
		writeFile(t, filepath.Join(dir, "kwonce.c"), "#include <linux/module.h>\nint broken(void) { return 1 }\nMODULE_LICENSE(\"GPL\");\n")
		stdout, _, code = kwatchRun(t, append(v.args(), "--once", "--json", dir)...)
		if code != 1 {
			t.Fatalf("--once on a broken module: exit %d, want 1\n%s", code, stdout)
		}
		e, ok := findEvent(parseEvents(t, stdout), "build_failed")
		if !ok || len(e.Diagnostics) == 0 || !strings.HasPrefix(e.Diagnostics[0], "kwonce.c:2:") {
			t.Fatalf("build_failed should name kwonce.c:2: %+v\n%s", e, stdout)
		}
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/kwonce/version")); got != "1" {
			t.Fatalf("after a failed build the guest runs version %q, want 1 still", got)
		}
		noStrayProcesses(t, dir)
	})
}

// checkStrippedUpload checks that the guest got (uploaded bytes of) a copy of
// ko without debug sections, kept in the state dir, while ko itself keeps
// them for the host.
func checkStrippedUpload(t *testing.T, state, ko string, uploaded int64) {
	t.Helper()
	stripped := filepath.Join(state, "upload", filepath.Base(ko))
	sections := func(name string) (debug int, size int64) {
		f, err := elf.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, s := range f.Sections {
			if strings.HasPrefix(s.Name, ".debug_") {
				debug++
			}
		}
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return debug, fi.Size()
	}
	fullDebug, fullSize := sections(ko)
	debug, size := sections(stripped)
	if fullDebug == 0 || debug != 0 || size >= fullSize {
		t.Fatalf("%s: %d debug sections, %d bytes; the upload %s: %d debug sections, %d bytes; want the debug info on the host only",
			ko, fullDebug, fullSize, stripped, debug, size)
	}
	if uploaded != size {
		t.Fatalf("uploaded %d bytes, want the stripped copy's %d (the full module has %d)", uploaded, size, fullSize)
	}
	t.Logf("uploaded %d of %d bytes", size, fullSize)
}

// watchProc is a kwatch process running in watch mode with --json.
type watchProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	events chan jsonEvent
	stderr *bytes.Buffer
	done   chan error
}

func startWatch(t *testing.T, args ...string) *watchProc {
	t.Helper()
	cmd := exec.Command(kwatchBin, append(args, "--json")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &watchProc{t: t, cmd: cmd, events: make(chan jsonEvent, 1000), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20) // a run_output event keeps up to 64 KiB of output
		for sc.Scan() {
			var e jsonEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				w.events <- e
			}
		}
		close(w.events)
	}()
	go func() { w.done <- cmd.Wait() }()
	t.Cleanup(func() { w.stop() })
	return w
}

// next waits for an event of one of the given types, returning the events
// seen on the way (the matching one last).
func (w *watchProc) next(timeout time.Duration, types ...string) []jsonEvent {
	w.t.Helper()
	var seen []jsonEvent
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-w.events:
			if !ok {
				w.t.Fatalf("kwatch exited while waiting for %v; stderr:\n%s", types, w.stderr)
			}
			seen = append(seen, e)
			for _, typ := range types {
				if e.Event == typ {
					return seen
				}
			}
		case <-deadline:
			w.t.Fatalf("no %v event within %s; saw %+v; stderr:\n%s", types, timeout, seen, w.stderr)
		}
	}
}

// stop interrupts kwatch like ^C does and checks that it exits cleanly.
func (w *watchProc) stop() {
	if w.cmd.ProcessState != nil {
		return
	}
	w.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-w.done:
		if err != nil {
			w.t.Errorf("kwatch exited with %v after ^C; stderr:\n%s", err, w.stderr)
		}
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		w.t.Errorf("kwatch did not exit within 30s of ^C")
	}
}

func TestWatchReloadsOnSave(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := t.TempDir()
		writeModule(t, dir, "kwwatch", 1)
		w := startWatch(t, append(v.args(), dir)...)
		evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed")
		if last := evs[len(evs)-1]; last.Event != "loaded" {
			t.Fatalf("first cycle ended with %+v", last)
		}

		// An edit reloads: the guest now runs version 2 and its init message was streamed.
		writeModule(t, dir, "kwwatch", 2)
		evs = w.next(time.Minute, "loaded", "load_failed", "build_failed")
		if last := evs[len(evs)-1]; last.Event != "loaded" {
			t.Fatalf("edit ended with %+v", last)
		}
		sawInit := false
		for _, e := range evs {
			sawInit = sawInit || (e.Event == "kmsg" && strings.Contains(e.Message, "kwwatch: version 2 loaded"))
		}
		if !sawInit {
			t.Errorf("the new module's init message was not streamed before the loaded event: %+v", evs)
		}
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/kwwatch/version")); got != "2" {
			t.Fatalf("guest runs version %q after the edit, want 2", got)
		}
		if !strings.Contains(guestRun(t, v.state, "cat /proc/modules"), "kwwatch ") {
			t.Fatal("kwwatch missing from the guest's /proc/modules")
		}

		// A build error is reported with the compiler's line; version 2 stays loaded.
		writeFile(t, filepath.Join(dir, "kwwatch.c"), "#include <linux/module.h>\nstatic int x = ;\nMODULE_LICENSE(\"GPL\");\n")
		evs = w.next(time.Minute, "build_failed", "loaded")
		last := evs[len(evs)-1]
		if last.Event != "build_failed" || len(last.Diagnostics) == 0 || !strings.HasPrefix(last.Diagnostics[0], "kwwatch.c:2:") {
			t.Fatalf("broken save: got %+v", last)
		}
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/kwwatch/version")); got != "2" {
			t.Fatalf("after a failed build the guest runs version %q, want 2", got)
		}

		// 30 saves within one second: at most 2 builds, and the last content wins.
		extra := saveStorm(t, 30, func(i int) { writeModule(t, dir, "kwwatch", 100+i) })
		t.Logf("save storm: %d batches more than in a storm on time", extra)
		builds := 0
		for {
			evs = w.next(2*time.Minute, "loaded", "build_start", "build_failed", "load_failed")
			e := evs[len(evs)-1]
			if e.Event == "build_start" {
				builds++
				continue
			}
			if e.Event != "loaded" {
				t.Fatalf("burst ended with %+v", e)
			}
			break
		}
		if builds > 2+extra {
			t.Errorf("30 saves in one second (%d batches more than on time) started %d builds, want at most %d", extra, builds, 2+extra)
		}
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/kwwatch/version")); got != "129" {
			t.Fatalf("after the burst the guest runs version %q, want 129", got)
		}
		w.stop()
		noStrayProcesses(t, dir)
	})
}

// saveStorm makes n saves about 33ms apart (30 a second) and returns how many
// batches beyond the storm's first the watcher may rightly make of them: one
// for each pause between saves that outlasted kwatch's 75ms debounce, and
// one for each whole second (the watcher's cap on a batch) the saves took.
// On a loaded machine the test itself can stall or slow down.
func saveStorm(t *testing.T, n int, save func(i int)) (extra int) {
	t.Helper()
	first, last := time.Now(), time.Now()
	for i := 0; i < n; i++ {
		save(i)
		if now := time.Now(); i > 0 && now.Sub(last) > 75*time.Millisecond {
			extra++
		}
		last = time.Now()
		if i < n-1 {
			time.Sleep(30 * time.Millisecond)
		}
	}
	return extra + int(last.Sub(first)/watcher.DefaultMaxWait)
}

// The VM outlives a kwatch run and the next run reuses it.
func TestVMReusedAcrossRuns(t *testing.T) {
	needGuest(t)
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	out, errOut, code := kwatchRun(t, append([]string{"vm", "up"}, vmArgs(state)...)...)
	if code != 0 {
		t.Fatalf("vm up: exit %d\n%s%s", code, out, errOut)
	}
	pid := func() string {
		st, err := os.ReadFile(filepath.Join(state, "vm.json"))
		if err != nil {
			t.Fatal(err)
		}
		var s struct{ PID int }
		json.Unmarshal(st, &s)
		return fmt.Sprint(s.PID)
	}
	before := pid()
	dir := t.TempDir()
	writeModule(t, dir, "kwreuse", 1)
	for i := 0; i < 2; i++ {
		out, errOut, code := kwatchRun(t, append(vmArgs(state), "--once", "--json", dir)...)
		if code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, errOut)
		}
		// A run shows the kernel log from its own start, not an earlier run's.
		var first string
		for _, e := range parseEvents(t, out) {
			if e.Event == "kmsg" && strings.Contains(e.Message, "kwreuse: version") && first == "" {
				first = e.Message
			}
		}
		if want := map[int]string{0: "loaded", 1: "unloaded"}[i]; !strings.HasSuffix(first, want) {
			t.Fatalf("run %d: first kwreuse log line %q, want one ending in %q", i, first, want)
		}
	}
	if after := pid(); after != before {
		t.Fatalf("VM pid changed from %s to %s: not reused", before, after)
	}
	status, _, _ := kwatchRun(t, "vm", "status", "--state-dir", state)
	if !strings.Contains(status, "running") {
		t.Fatalf("vm status: %s", status)
	}
	if _, _, code := kwatchRun(t, "vm", "down", "--state-dir", state); code != 0 {
		t.Fatal("vm down failed")
	}
	noStrayProcesses(t, state)
}

// rustTree returns the Rust-enabled 6.1 kernel tree scripts/rust-kernel.sh built
// (`make test` passes it in KWATCH_RUST_KERNEL).
func rustTree(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: boots the Rust kernel")
	}
	tree := os.Getenv("KWATCH_RUST_KERNEL")
	if tree == "" {
		done, _ := filepath.Glob(filepath.Join(os.Getenv("HOME"), ".cache/kwatch/rust-kernel/*/done"))
		if len(done) == 0 {
			t.Skip("no Rust kernel: run scripts/rust-kernel.sh (make test does)")
		}
		// The newest build: an older one was made with other options.
		newest, at := "", time.Time{}
		for _, d := range done {
			if fi, err := os.Stat(d); err == nil && fi.ModTime().After(at) {
				newest, at = d, fi.ModTime()
			}
		}
		tree = filepath.Join(filepath.Dir(newest), "linux")
	}
	if _, err := os.Stat(filepath.Join(tree, "arch/x86/boot/bzImage")); err != nil {
		t.Fatalf("KWATCH_RUST_KERNEL=%s has no bzImage: %v", tree, err)
	}
	return tree
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-r", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", from, err, out)
	}
}

// Rust modules hot-reload for real: the examples/hello-rust module against the
// Rust-enabled kernel, edited while kwatch runs.
func TestRustReload(t *testing.T) {
	tree := rustTree(t)
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	dir := t.TempDir()
	copyDir(t, "examples/hello-rust", dir)
	src := filepath.Join(dir, "hello_rust.rs")
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// A rustup rustc first on PATH must not leak into the build.
	w := startWatch(t, "--vm", "qemu", "--kernel", filepath.Join(tree, "arch/x86/boot/bzImage"),
		"--kdir", tree, "--accel", "tcg", "--state-dir", state, dir)
	loadedWith := func(version string) {
		t.Helper()
		evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed")
		if last := evs[len(evs)-1]; last.Event != "loaded" {
			t.Fatalf("cycle ended with %+v", last)
		}
		log := guestRun(t, state, "dmesg")
		if !strings.Contains(log, "hello_rust: version "+version+" loaded") {
			t.Fatalf("guest log lacks version %s loaded:\n%s", version, log)
		}
	}
	loadedWith("1")
	if !strings.Contains(guestRun(t, state, "cat /proc/modules"), "hello_rust ") {
		t.Fatal("hello_rust missing from /proc/modules")
	}

	writeFile(t, src, strings.Replace(string(orig), "const VERSION: u32 = 1;", "const VERSION: u32 = 2;", 1))
	loadedWith("2")

	// A Rust compile error shows rustc's error with file:line and keeps version 2 loaded.
	writeFile(t, src, strings.Replace(string(orig), "const VERSION: u32 = 1;", `const VERSION: u32 = "two";`, 1))
	evs := w.next(time.Minute, "build_failed", "loaded")
	last := evs[len(evs)-1]
	if last.Event != "build_failed" || len(last.Diagnostics) == 0 ||
		!strings.HasPrefix(last.Diagnostics[0], "hello_rust.rs:") || !strings.Contains(last.Diagnostics[0], "error[E0308]") {
		t.Fatalf("Rust compile error: got %+v", last)
	}
	log := guestRun(t, state, "dmesg")
	if strings.Contains(log, "version 2 unloaded") || !strings.Contains(guestRun(t, state, "cat /proc/modules"), "hello_rust ") {
		t.Fatalf("a failed Rust build unloaded the running module:\n%s", log)
	}
	w.stop()
	noStrayProcesses(t, dir)
}

// --vm ssh drives a machine kwatch did not start: here the shared VM, reached
// through its forwarded port with kwatch's key, from another state dir.
func TestSSHBackend(t *testing.T) {
	needGuest(t)
	if _, _, code := kwatchRun(t, append([]string{"vm", "up"}, vmArgs(e2eState)...)...); code != 0 {
		t.Fatal("vm up failed")
	}
	st, ok, err := vm.ReadState(e2eState)
	if err != nil || !ok {
		t.Fatalf("no VM state: %v", err)
	}
	hostKey, err := vm.EnsureHostKey(e2eState)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := exec.Command("dropbearkey", "-y", "-f", hostKey).Output()
	if err != nil {
		t.Fatal(err)
	}
	fp := regexp.MustCompile(`SHA256:[A-Za-z0-9+/]+`).FindString(string(pub))
	if fp == "" {
		t.Fatalf("no fingerprint in dropbearkey's output:\n%s", pub)
	}
	// Another user of the guest made the old fixed upload dir first, open to all.
	guestRun(t, e2eState, "rm -rf /tmp/kwatch /tmp/kwatch.*; mkdir /tmp/kwatch && chown 1000:1000 /tmp/kwatch && chmod 0777 /tmp/kwatch")
	home := t.TempDir()
	t.Setenv("HOME", home) // no ~/.ssh of the machine's user gets in the way
	dir := t.TempDir()
	writeModule(t, dir, "kwssh", 7)
	other := filepath.Join(t.TempDir(), "state")
	target := fmt.Sprintf("root@127.0.0.1:%d", st.Port)
	args := []string{"--vm", "ssh", "--ssh", target, "--identity", filepath.Join(e2eState, "id_ed25519"), "--state-dir", other}
	once := append(args, "--once", "--json", "--run", "cat /sys/module/kwssh/version", dir)

	// First contact: the unknown key is refused, showing its fingerprint; nothing is pinned.
	_, stderr, code := kwatchRun(t, once...)
	if code != 2 || !strings.Contains(stderr, fp) || !strings.Contains(stderr, "--accept-host-key") {
		t.Fatalf("first contact without accepting: exit %d\n%s\nwant exit 2 showing %s and --accept-host-key", code, stderr, fp)
	}
	_, stderr, code = kwatchRun(t, append([]string{"--accept-host-key", "SHA256:AAAA"}, once...)...)
	if code != 2 || !strings.Contains(stderr, fp) {
		t.Fatalf("a wrong --accept-host-key: exit %d\n%s\nwant exit 2 naming the real key", code, stderr)
	}
	// On a terminal kwatch asks instead; anything but y refuses.
	vmSSH := append([]string{kwatchBin, "vm", "ssh"}, append(args, "--", "echo", "in-guest")...)
	if out, code := onTerminal(t, "n\n", vmSSH...); code != 2 || !strings.Contains(out, fp) || !strings.Contains(out, "[y/N]") {
		t.Fatalf("answering n at the prompt: exit %d\n%s\nwant exit 2 after a prompt showing %s", code, out, fp)
	}
	if _, err := os.Stat(filepath.Join(other, "known_hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key nobody accepted was pinned: %v", err)
	}
	asked := filepath.Join(t.TempDir(), "state")
	askArgs := slices.Clone(vmSSH)
	askArgs[slices.Index(askArgs, other)] = asked
	if out, code := onTerminal(t, "y\n", askArgs...); code != 0 || !strings.Contains(out, "in-guest") {
		t.Fatalf("answering y at the prompt: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(asked, "known_hosts")); err != nil {
		t.Fatalf("the key accepted at the prompt was not pinned: %v", err)
	}

	stdout, stderr, code := kwatchRun(t, append([]string{"--accept-host-key", fp}, once...)...)
	if code != 0 {
		t.Fatalf("--vm ssh --once --accept-host-key: exit %d\n%s\n%s", code, stdout, stderr)
	}
	e, ok := findEvent(parseEvents(t, stdout), "run_output")
	if !ok || strings.TrimSpace(e.Output) != "7" {
		t.Fatalf("run_output %+v, want version 7", e)
	}
	// The module went through a private dir, not the hostile one, and that dir is gone.
	if out := guestRun(t, e2eState, "ls -A /tmp/kwatch; ls -d /tmp/kwatch.* 2>/dev/null; true"); out != "" {
		t.Errorf("after the run the guest has %q in /tmp/kwatch or a /tmp/kwatch.* left", out)
	}
	// The key is pinned now: kwatch vm ssh reaches the same machine with the same flags and no accept.
	out, _, code := kwatchRun(t, append([]string{"vm", "ssh"}, append(args, "--", "grep", "-c", "^kwssh ", "/proc/modules")...)...)
	if code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("vm ssh --vm ssh: exit %d, output %q", code, out)
	}
	pinned, err := os.ReadFile(filepath.Join(other, "known_hosts"))
	if err != nil || len(pinned) == 0 {
		t.Fatalf("no pinned host key in the state dir: %v", err)
	}
	// vm ssh passes the guest command's exit status through.
	if _, _, code := kwatchRun(t, append([]string{"vm", "ssh"}, append(args, "--", "exit 5")...)...); code != 5 {
		t.Fatalf("vm ssh -- 'exit 5' exited %d, want 5", code)
	}

	// The user's known_hosts and ~/.ssh/config are honoured: a host alias, a
	// fresh state dir, no flags, and kwatch's own known_hosts stays untouched.
	writeFile(t, filepath.Join(home, ".ssh", "known_hosts"), string(pinned))
	writeFile(t, filepath.Join(home, ".ssh", "config"), fmt.Sprintf(
		"Host kwguest\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n", st.Port, filepath.Join(e2eState, "id_ed25519")))
	third := filepath.Join(t.TempDir(), "state")
	out, errOut, code := kwatchRun(t, "vm", "ssh", "--vm", "ssh", "--ssh", "kwguest", "--state-dir", third, "--", "echo", "via-config")
	if code != 0 || strings.TrimSpace(out) != "via-config" {
		t.Fatalf("vm ssh --ssh kwguest (from ~/.ssh/config): exit %d, %q\n%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(third, "known_hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kwatch pinned a key the user's known_hosts already has: %v", err)
	}
}

// onTerminal runs args with a terminal for stdin and stdout (script(1)),
// typing input, and returns what the terminal showed and the exit code.
func onTerminal(t *testing.T, input string, args ...string) (string, int) {
	t.Helper()
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = ssh.Quote(a)
	}
	// exec, so that kwatch is script's child whatever $SHELL is.
	cmd := exec.Command("script", "-qec", "exec "+strings.Join(quoted, " "), "/dev/null")
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("script: %v", err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// kwatch init writes a flake project, makes it a git repository, and never
// overwrites without --force.
func TestInit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs git and nix-instantiate")
	}
	dir := filepath.Join(t.TempDir(), "my-mod")
	out, stderr, code := kwatchRun(t, "init", dir)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	for _, f := range []string{"flake.nix", "configuration.nix", "module.nix", "src/Kbuild", "src/Makefile", "src/my_mod.rs", ".gitignore"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("init did not report writing %s:\n%s", f, out)
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, ".kwatch", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "configuration.nix"))
	if !strings.Contains(string(conf), strings.TrimSpace(string(key))) {
		t.Error("configuration.nix does not authorize kwatch's key")
	}
	tracked, err := exec.Command("git", "-C", dir, "ls-files").Output()
	if err != nil || !strings.Contains(string(tracked), "flake.nix") || strings.Contains(string(tracked), ".kwatch") {
		t.Fatalf("git ls-files: %v\n%s", err, tracked)
	}
	if _, err := exec.LookPath("nix-instantiate"); err == nil {
		for _, f := range []string{"flake.nix", "configuration.nix", "module.nix"} {
			if out, err := exec.Command("nix-instantiate", "--parse", filepath.Join(dir, f)).CombinedOutput(); err != nil {
				t.Errorf("%s does not parse: %s", f, out)
			}
		}
	}
	_, stderr, code = kwatchRun(t, "init", dir)
	if code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("second init: exit %d, stderr %q; want 2 and a --force hint", code, stderr)
	}
	if _, _, code = kwatchRun(t, "init", "--force", dir); code != 0 {
		t.Fatalf("init --force: exit %d", code)
	}
}

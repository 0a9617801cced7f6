package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kwatch/debugger"
	"kwatch/debuginfo"
	"kwatch/guest/vm"
)

// gdbProc is a running `kwatch gdb`, its output collected as it comes
// (prompts end no line).
type gdbProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan error
}

func startGDB(t *testing.T, args ...string) *gdbProc {
	t.Helper()
	return startProc(t, exec.Command(kwatchBin, append([]string{"gdb"}, args...)...))
}

func startProc(t *testing.T, cmd *exec.Cmd) *gdbProc {
	t.Helper()
	g := &gdbProc{t: t, cmd: cmd, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	g.cmd.Stdout, g.cmd.Stderr = pw, pw
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pr.Read(buf)
			g.mu.Lock()
			g.out.Write(buf[:n])
			g.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { err := g.cmd.Wait(); pw.Close(); g.done <- err }()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
		}
	})
	return g
}

func (g *gdbProc) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

// waitFor waits until the session printed text.
func (g *gdbProc) waitFor(timeout time.Duration, text string) {
	g.t.Helper()
	g.waitCount(timeout, text, 1)
}

// waitCount waits until the session printed text n times.
func (g *gdbProc) waitCount(timeout time.Duration, text string, n int) {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(g.output(), text) < n {
		if time.Now().After(deadline) {
			g.t.Fatalf("kwatch gdb did not print %q %d times in %s; output:\n%s", text, n, timeout, g.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wait waits for gdb to exit and returns its exit code.
func (g *gdbProc) wait(timeout time.Duration) int {
	g.t.Helper()
	select {
	case err := <-g.done:
		time.Sleep(100 * time.Millisecond) // the last lines
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			g.t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		g.t.Fatalf("kwatch gdb still runs after %s; output:\n%s", timeout, g.output())
	}
	return 0
}

// funcLines returns the lines of function fn's body in a C source file.
func funcLines(t *testing.T, src, fn string) (first, last int) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		switch {
		case first == 0 && strings.Contains(l, fn+"("):
			first = i + 1
		case first != 0 && l == "}":
			return first, i + 1
		}
	}
	t.Fatalf("no function %s in %s", fn, src)
	return 0, 0
}

// guestAsync runs a guest command through `kwatch vm ssh` in the background.
func guestAsync(state, cmd string) <-chan string {
	res := make(chan string, 1)
	go func() {
		out, err := exec.Command(kwatchBin, "vm", "ssh", "--state-dir", state, "--", cmd).CombinedOutput()
		res <- fmt.Sprintf("%s(err %v)", out, err)
	}()
	return res
}

// loadKwgdb loads testdata/gdb/kwgdb into v's shared guest and returns its
// directory.
func loadKwgdb(t *testing.T, v e2eVM) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kwgdb")
	copyDir(t, "testdata/gdb/kwgdb", dir)
	if _, stderr, code := kwatchRun(t, append(v.args(), "--once", "--json", dir)...); code != 0 {
		t.Fatalf("loading kwgdb: exit %d\n%s", code, stderr)
	}
	return dir
}

// The acceptance test: a breakpoint in a function the module's sysfs
// parameter setter calls, hit by a write from the guest; gdb shows the
// source line, and after it exits the write completes and the guest runs on.
func TestGDBStopsInModule(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := loadKwgdb(t, v)
		// gdb's kill would end QEMU: kwatch refuses it, and the session goes on.
		g := startGDB(t, append(v.args(), dir, "--", "-batch", "-ex", "break kwgdb_poke", "-ex", "kill", "-ex", "continue", "-ex", "bt 1")...)
		g.waitFor(time.Minute, "kill would end QEMU")
		write := guestAsync(v.state, "echo 21 > /sys/module/kwgdb/parameters/poke && cat /sys/module/kwgdb/parameters/poke")
		if code := g.wait(2 * time.Minute); code != 0 {
			t.Fatalf("kwatch gdb exited %d:\n%s", code, g.output())
		}
		out := g.output()
		checkStop(t, out, filepath.Join(dir, "kwgdb.c"), "kwgdb_poke", `kwgdb_poke \(v=21\)`)
		if !strings.Contains(out, "detached") {
			t.Errorf("gdb did not detach:\n%s", out)
		}
		checkGuestGoesOn(t, v.state, write, "42\n")
	})
}

// checkStop checks that gdb's output has frame #0 in function fn (its gdb
// name matched by frame) at a line of fn's body in src.
func checkStop(t *testing.T, out, src, fn, frame string) {
	t.Helper()
	first, last := funcLines(t, src, fn)
	m := regexp.MustCompile(`(?m)^#0 +` + frame + ` at \S*` + regexp.QuoteMeta(filepath.Base(src)) + `:(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("gdb did not stop in %s with its source line:\n%s", fn, out)
	}
	if line, _ := strconv.Atoi(m[1]); line < first || line > last {
		t.Errorf("gdb stopped at %s:%s, outside %s (lines %d-%d)", filepath.Base(src), m[1], fn, first, last)
	}
}

// checkGuestGoesOn checks that the guest command that hit the breakpoint
// completes after gdb exited, printing want first, and the guest answers.
func checkGuestGoesOn(t *testing.T, state string, res <-chan string, want string) {
	t.Helper()
	select {
	case r := <-res:
		if !strings.HasPrefix(r, want) {
			t.Errorf("the guest command after gdb printed %q, want %q first", r, want)
		}
	case <-time.After(time.Minute):
		t.Fatal("the guest command did not complete after gdb exited")
	}
	checkAlive(t, state, "gdb")
}

// A reload while the session runs: the session says so, and at the next
// stop (a ^C here) the symbols and the breakpoint move to the new module.
func TestGDBFollowsReloads(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := filepath.Join(t.TempDir(), "kwgdb")
		copyDir(t, "testdata/gdb/kwgdb", dir)
		w := startWatch(t, append(v.args(), dir)...)
		w.expectLoaded(3 * time.Minute)
		g := startGDB(t, append(v.args(), dir, "--", "-batch", "-ex", "break kwgdb_poke", "-ex", "continue", "-ex", "info breakpoints")...)
		g.waitFor(time.Minute, "Breakpoint 1 at")

		src := filepath.Join(dir, "kwgdb.c")
		b, _ := os.ReadFile(src)
		writeFile(t, src, strings.Replace(string(b), "v * 2", "v * 3 + 1", 1))
		w.expectLoaded(2 * time.Minute)
		g.waitFor(30*time.Second, "kwatch: kwgdb was reloaded (.text now")
		// ^C, as the message says: gdb stops the guest, and the symbols follow.
		gdbPID := childPID(t, g.cmd.Process.Pid)
		if err := syscall.Kill(gdbPID, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := g.wait(time.Minute); code != 0 {
			t.Fatalf("kwatch gdb exited %d:\n%s", code, g.output())
		}
		out := g.output()
		if !strings.Contains(out, "kwatch: kwgdb was reloaded: its symbols now start at") {
			t.Fatalf("the symbols did not follow the reload at the stop:\n%s", out)
		}
		m := regexp.MustCompile(`(?m)^1 +breakpoint +keep +y +(0x[0-9a-f]+) in kwgdb_poke at`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no breakpoint on kwgdb_poke after the reload:\n%s", out)
		}
		at, _ := strconv.ParseUint(m[1], 0, 64)
		lo, hi := moduleCore(t, v.state, "kwgdb")
		if at < lo || at >= hi {
			t.Errorf("the breakpoint is at %#x, outside the reloaded module (%#x-%#x)", at, lo, hi)
		}
		if got := guestRun(t, v.state, "cat /sys/module/kwgdb/parameters/poke; echo 2 > /sys/module/kwgdb/parameters/poke; cat /sys/module/kwgdb/parameters/poke"); !strings.HasSuffix(got, "7\n") {
			t.Errorf("the reloaded module answered %q, want the new build's 2*3+1", got)
		}
		w.stop()
		noStrayProcesses(t, dir)
	})
}

// moduleCore returns the address range of a loaded module's text and data,
// from the lowest section address and the module's core size.
func moduleCore(t *testing.T, state, name string) (lo, hi uint64) {
	t.Helper()
	out := guestRun(t, state, fmt.Sprintf("cat /sys/module/%s/coresize /sys/module/%s/sections/.text*", name, name))
	f := strings.Fields(out)
	size, _ := strconv.ParseUint(f[0], 10, 64)
	lo = ^uint64(0)
	for _, a := range f[1:] {
		v, _ := strconv.ParseUint(a, 0, 64)
		lo = min(lo, v)
	}
	return lo, lo + size
}

// childPID returns the one child of process pid (kwatch gdb's gdb); Go
// starts it from any of its threads.
func childPID(t *testing.T, pid int) int {
	t.Helper()
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	if len(kids) != 1 {
		t.Fatalf("children of %d: %q", pid, kids)
	}
	c, _ := strconv.Atoi(kids[0])
	return c
}

// On a kernel without sysfs sections (the Rust test kernel has no
// CONFIG_KALLSYMS) kwatch gdb finds a module in the kernel's module list
// through the stub and places its sections by the kernel's layout rules:
// one allocation on 6.1, one per kind of memory (struct module's mem[]) on
// 6.12. Debian's kernels list the sections too, so it checks one against
// the other.
func TestGDBModuleLayoutMatchesKernel(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := loadKwgdb(t, v)
		f := strings.Fields(guestRun(t, v.state, "grep ' modules$' /proc/kallsyms"))
		if len(f) == 0 {
			t.Fatal("the guest's /proc/kallsyms has no modules symbol")
		}
		head, _ := strconv.ParseUint(f[0], 16, 64)
		loaded := debuginfo.ParseGuest([]byte(guestRun(t, v.state, debuginfo.GuestScript([]string{"kwgdb"}))))["kwgdb"]
		if loaded == nil || len(loaded.Sections) == 0 {
			t.Fatal("the guest lists no sections for kwgdb")
		}
		st, err := vm.DialStub(vm.GDBSocket(v.state))
		if err != nil {
			t.Fatal(err)
		}
		secs, err := debugger.SectionsFromMemory(st, head, "kwgdb", filepath.Join(dir, "kwgdb.ko"))
		if derr := st.Detach(); derr != nil {
			t.Errorf("detaching: %v", derr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := secs[".text"]; !ok || len(secs) < 5 {
			t.Fatalf("placed only %v", secs)
		}
		for name, at := range secs {
			if want, ok := loaded.Sections[name]; !ok || want != at {
				t.Errorf("section %s: placed at %#x, the kernel says %#x", name, at, want)
			}
		}
		checkAlive(t, v.state, "the stub detached")
	})
}

// The same on the Rust test kernel: a breakpoint by name in a Rust module
// (v0-mangled symbols, debug info the module brings itself), hit from the
// guest by the rmmod that drops the module. That kernel has no
// CONFIG_KALLSYMS, so kwatch gdb finds the module through the stub, and
// adds the tree's vmlinux.
func TestGDBStopsInRustModule(t *testing.T) {
	tree := rustTree(t)
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	dir := filepath.Join(t.TempDir(), "kwgdb_rust")
	copyDir(t, "testdata/gdb/kwgdb_rust", dir)
	vm := []string{"--vm", "qemu", "--kernel", filepath.Join(tree, "arch/x86/boot/bzImage"), "--accel", "tcg", "--state-dir", state, "--kdir", tree}
	if _, stderr, code := kwatchRun(t, append(vm, "--once", "--json", dir)...); code != 0 {
		t.Fatalf("loading kwgdb_rust: exit %d\n%s", code, stderr)
	}
	g := startGDB(t, append(vm, dir, "--", "-batch", "-ex", "break kwgdb_rust::farewell", "-ex", "continue", "-ex", "bt 2")...)
	g.waitFor(time.Minute, "Breakpoint 1 at")
	rmmod := guestAsync(state, "rmmod kwgdb_rust && dmesg | grep -c 'farewell after 1 load'")
	if code := g.wait(2 * time.Minute); code != 0 {
		t.Fatalf("kwatch gdb exited %d:\n%s", code, g.output())
	}
	out := g.output()
	checkStop(t, out, filepath.Join(dir, "kwgdb_rust.rs"), "fn farewell", `kwgdb_rust::farewell \(loads=1\)`)
	if !strings.Contains(out, "in kwgdb_rust::{impl#1}::drop") {
		t.Errorf("the Rust caller (the Drop impl) is not in the backtrace:\n%s", out)
	}
	if !strings.Contains(out, "no CONFIG_KALLSYMS") {
		t.Errorf("kwatch gdb did not say how it found the module on this kernel:\n%s", out)
	}
	checkGuestGoesOn(t, state, rmmod, "1\n")
}

// A VM that an older kwatch started has no gdb socket: the next kwatch
// restarts it, once, and says why. (The socket is QEMU's and the record
// kwatch's: one kernel series is enough, and this test boots its own VM
// twice.)
func TestOldVMGetsGDBSocketOnce(t *testing.T) {
	needGuest(t)
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	up := func() string {
		t.Helper()
		out, stderr, code := kwatchRun(t, append([]string{"vm", "up"}, vmArgs(state)...)...)
		if code != 0 {
			t.Fatalf("vm up: exit %d\n%s%s", code, out, stderr)
		}
		return out
	}
	up()
	// Make the running VM look like one from before the socket existed.
	p := filepath.Join(state, "vm.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, strings.Replace(string(b), vm.GDBIdent, "", 1))
	os.Remove(vm.GDBSocket(state))
	pid := vmPID(t, state)

	if out := up(); !strings.Contains(out, "started without a gdb socket: restarting it once") {
		t.Errorf("no notice for the old VM:\n%s", out)
	}
	if vmPID(t, state) == pid {
		t.Fatal("the old VM was not restarted")
	}
	if _, err := os.Stat(vm.GDBSocket(state)); err != nil {
		t.Errorf("the new VM has no gdb socket: %v", err)
	}
	pid = vmPID(t, state)
	if out := up(); strings.Contains(out, "gdb socket") || vmPID(t, state) != pid {
		t.Errorf("the VM was restarted a second time:\n%s", out)
	}
}

// startHoldingGDB starts kwatch gdb on the module in dir with a gdb that
// stops the guest and then waits for more commands on stdin, which the test
// holds open; it returns once the guest is stopped.
func startHoldingGDB(t *testing.T, v e2eVM, dir string, attr *syscall.SysProcAttr) *gdbProc {
	t.Helper()
	cmd := exec.Command(kwatchBin, append(append([]string{"gdb"}, v.args()...), dir, "--", "-ex", "interrupt", "-ex", "info registers rip")...)
	cmd.SysProcAttr = attr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	g := startProc(t, cmd)
	g.waitFor(time.Minute, "rip ")
	return g
}

// A gdb killed while it holds the guest stopped (it cannot detach): kwatch
// lets the guest run on, says so, and exits 1.
func TestGDBKilledGuestRunsOn(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		g := startHoldingGDB(t, v, loadKwgdb(t, v), nil)
		if err := syscall.Kill(childPID(t, g.cmd.Process.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := g.wait(time.Minute); code != 1 {
			t.Errorf("kwatch gdb exited %d after gdb was killed, want 1:\n%s", code, g.output())
		}
		if !strings.Contains(g.output(), "gdb was killed before it detached: the guest runs on") {
			t.Errorf("no notice that the guest was let run:\n%s", g.output())
		}
		checkAlive(t, v.state, "gdb was killed")
	})
}

// An interactive session on a terminal (script(1) gives it one): ^C stops
// the guest and is gdb's, not the end of kwatch; quit detaches.
func TestGDBInteractive(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := loadKwgdb(t, v)
		// exec: script runs the command with $SHELL -c, and a shell that stays
		// (dash does) dies of the first ^C: script would report its death.
		line := strings.Join(append(append([]string{"exec", kwatchBin, "gdb"}, v.args()...), dir), " ")
		cmd := exec.Command("script", "-qec", line, "/dev/null")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		g := startProc(t, cmd)
		g.waitFor(time.Minute, "(gdb) ")
		for i := 1; i <= 2; i++ { // twice: kwatch must outlive a second ^C too
			io.WriteString(in, "continue\n")
			g.waitCount(30*time.Second, "Continuing.", i)
			time.Sleep(time.Second)
			in.Write([]byte{3})
			g.waitCount(30*time.Second, "SIGINT, Interrupt.", i)
		}
		io.WriteString(in, "quit\n")
		g.waitFor(30*time.Second, "Quit anyway? (y or n)")
		io.WriteString(in, "y\n")
		if code := g.wait(time.Minute); code != 0 {
			t.Fatalf("kwatch gdb exited %d:\n%s", code, g.output())
		}
		if !strings.Contains(g.output(), "detached") {
			t.Errorf("gdb did not detach:\n%s", g.output())
		}
		checkAlive(t, v.state, "gdb")
	})
}

// checkAlive checks that the guest of state dir state answers, after what
// the message names.
func checkAlive(t *testing.T, state, after string) {
	t.Helper()
	if got := guestRun(t, state, "echo alive"); got != "alive\n" {
		t.Errorf("the guest answered %q after %s", got, after)
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kunitTree returns the Rust 6.1 kernel tree with KUnit built in.
func kunitTree(t *testing.T) string {
	t.Helper()
	tree := rustTree(t)
	config, err := os.ReadFile(filepath.Join(tree, ".config"))
	if err != nil || !strings.Contains(string(config), "\nCONFIG_KUNIT=y\n") {
		t.Fatalf("%s has no KUnit (CONFIG_KUNIT=y): build the test kernel again with scripts/rust-kernel.sh", tree)
	}
	return tree
}

// kunitVM returns the flags for a VM of its own running the KUnit kernel.
func kunitVM(t *testing.T, tree string) []string {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	return []string{"--vm", "qemu", "--kernel", filepath.Join(tree, "arch/x86/boot/bzImage"), "--kdir", tree,
		"--accel", "tcg", "--state-dir", state}
}

// kunitCycle waits for the end of a load with its KUnit results and returns
// the kunit_case events by case name (case[param] for a failed parameter)
// and the summary.
func (w *watchProc) kunitCycle(timeout time.Duration) (map[string]jsonEvent, jsonEvent) {
	w.t.Helper()
	cases := map[string]jsonEvent{}
	for {
		evs := w.next(timeout, "kunit_case", "kunit_summary", "load_failed", "build_failed")
		e := evs[len(evs)-1]
		switch e.Event {
		case "kunit_case":
			cases[e.Case] = e
		case "kunit_summary":
			return cases, e
		default:
			w.t.Fatalf("cycle ended with %+v", e)
		}
	}
}

// lineOf returns the 1-based number of the line of file holding text.
func lineOf(t *testing.T, file, text string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, text)
	return 0
}

// edit replaces old with new in file, as a save would.
func edit(t *testing.T, file, old, new string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q", file, old)
	}
	writeFile(t, file, strings.Replace(string(data), old, new, 1))
}

func summary(e jsonEvent) string {
	p, ms := -1, int64(-1)
	if e.Passed != nil {
		p = *e.Passed
	}
	if e.MS != nil {
		ms = *e.MS
	}
	return fmt.Sprintf("passed %d failed %d skipped %d crashed %d (ms %d)", p, e.Failed, e.Skipped, e.Crashed, ms)
}

// Issue 18: a module's KUnit suites run on every save, on the KUnit-enabled
// test kernel: passing, failing, skipped and parameterised cases, the fix,
// the kernel tainted N without a restart, and --once's exit codes.
func TestKUnitOnSave(t *testing.T) {
	tree := kunitTree(t)
	vm := kunitVM(t, tree)
	dir := t.TempDir()
	copyDir(t, "testdata/kunit/cases", dir)
	src := filepath.Join(dir, "kwkunit.c")

	w := startWatch(t, append(vm, dir)...)
	cases, sum := w.kunitCycle(3 * time.Minute)
	if sum.Passed == nil || *sum.Passed != 1 || sum.Failed != 2 || sum.Skipped != 1 || sum.Crashed != 0 || sum.MS == nil {
		t.Errorf("summary: %s, want 1 passed, 2 failed, 1 skipped", summary(sum))
	}
	if c := cases["kw_pass"]; c.Status != "pass" || c.Suite != "kwkunit" {
		t.Errorf("kw_pass: %+v", c)
	}
	if c := cases["kw_skip"]; c.Status != "skip" || c.Message != "not on this machine" {
		t.Errorf("kw_skip: %+v", c)
	}
	want := lineOf(t, src, "KUNIT_EXPECT_EQ(test, kw_double(2), 4)")
	if c := cases["kw_double_two"]; c.Status != "fail" || c.File != src || c.Line != want ||
		!strings.Contains(c.Message, "Expected kw_double(2) == 4, but") || !strings.Contains(c.Message, "== 5") {
		t.Errorf("kw_double_two: %+v; want a failure at %s:%d, 5 for 4", c, src, want)
	}
	// The parameterised case fails for x=2 only.
	want = lineOf(t, src, "KUNIT_EXPECT_EQ(test, kw_double(*x), *x * 2)")
	if c := cases["kw_double_each"]; c.Status != "fail" || c.Param != "x=2" || c.Line != want {
		t.Errorf("kw_double_each: %+v; want a failure for x=2 at line %d", c, want)
	}
	if len(cases) != 4 {
		t.Errorf("%d cases reported, want 4: %+v", len(cases), cases)
	}

	// The fix: the next save's cases pass, in the same VM (the tests taint
	// the kernel N, which is no reason to restart it).
	edit(t, src, "#define KW_BROKEN 1", "#define KW_BROKEN 0")
	evs := w.next(2*time.Minute, "kunit_summary", "load_failed", "build_failed")
	sum = evs[len(evs)-1]
	if sum.Event != "kunit_summary" || sum.Failed != 0 || sum.Passed == nil || *sum.Passed != 3 || sum.Skipped != 1 {
		t.Fatalf("after the fix: %+v (%s), want 3 passed and 1 skipped", sum, summary(sum))
	}
	for _, e := range evs {
		if e.Event == "vm_ready" || (e.Event == "notice" && strings.Contains(e.Message, "restarting")) {
			t.Errorf("the guest was restarted: %+v", e)
		}
	}
	state := vm[len(vm)-1]
	taint, err := strconv.ParseUint(strings.TrimSpace(guestRun(t, state, "cat /proc/sys/kernel/tainted")), 10, 64)
	if err != nil || taint&(1<<18) == 0 {
		t.Errorf("taint %d (%v): want N (TAINT_TEST) set by the tests", taint, err)
	}
	w.stop()

	// --once: 0 when every case passed or was skipped, 1 when one failed;
	// the human output has the summary line and a line per failure.
	out, errOut, code := kwatchRun(t, append(vm, "--once", dir)...)
	if code != 0 || !strings.Contains(out, "✓ kunit 3 passed · 1 skipped (") {
		t.Errorf("--once on passing tests: exit %d, want 0 and the summary line:\n%s%s", code, out, errOut)
	}
	edit(t, src, "#define KW_BROKEN 0", "#define KW_BROKEN 1")
	out, errOut, code = kwatchRun(t, append(vm, "--once", dir)...)
	line := fmt.Sprintf("✗ kwkunit.kw_double_each[x=2] failed at %s:%d: Expected kw_double(*x) == *x * 2, but", src, want)
	if code != 1 || !strings.Contains(out, "✗ kunit 1 passed · 2 failed · 1 skipped (") || !strings.Contains(out, line) {
		t.Errorf("--once on failing tests: exit %d, want 1, the summary and %q:\n%s%s", code, line, out, errOut)
	}
	noStrayProcesses(t, dir)
}

// A case that oopses: on 6.1 insmod would wait for KUnit's 300 s timeout;
// kwatch reports the oops and the crashed cases within seconds, and restarts
// the VM before the next load.
func TestKUnitCrash(t *testing.T) {
	tree := kunitTree(t)
	vm := kunitVM(t, tree)
	dir := t.TempDir()
	copyDir(t, "testdata/kunit/crash", dir)

	w := startWatch(t, append(vm, dir)...)
	evs := w.next(3*time.Minute, "build_ok", "build_failed")
	if evs[len(evs)-1].Event != "build_ok" {
		t.Fatalf("build: %+v", evs[len(evs)-1])
	}
	built := time.Now()
	evs = w.next(2*time.Minute, "load_failed", "loaded")
	took := time.Since(built)
	failed := evs[len(evs)-1]
	if failed.Event != "load_failed" || !strings.Contains(failed.Message, "a KUnit case oopsed while kwkcrash loaded") {
		t.Fatalf("load: %+v, want it failed for the oops", failed)
	}
	if took > time.Minute {
		t.Errorf("the oops ended the load after %s: kwatch waited for KUnit's timeout", took)
	}
	status := map[string]string{}
	var sum jsonEvent
	crashed := false
	for _, e := range evs {
		switch e.Event {
		case "kunit_case":
			status[e.Case] = e.Status
		case "kunit_summary":
			sum = e
		case "crash":
			crashed = crashed || e.Severity == "oops"
		}
	}
	if !crashed {
		t.Errorf("no oops reported: %+v", evs)
	}
	if status["kw_first"] != "pass" || status["case 2"] != "crash" || status["case 3"] != "crash" || len(status) != 3 {
		t.Errorf("cases %v, want kw_first passed, cases 2 and 3 crashed", status)
	}
	if sum.Crashed != 2 || sum.Passed == nil || *sum.Passed != 1 {
		t.Errorf("summary %s, want 1 passed, 2 crashed", summary(sum))
	}

	// The fix loads into a restarted VM, and every case passes.
	edit(t, filepath.Join(dir, "kwkcrash.c"), "#define KW_CRASH 1", "#define KW_CRASH 0")
	evs = w.next(3*time.Minute, "kunit_summary", "load_failed", "build_failed")
	sum = evs[len(evs)-1]
	restarted := false
	for _, e := range evs {
		restarted = restarted || (e.Event == "notice" && strings.HasPrefix(e.Message, "restarting the VM before loading"))
	}
	if !restarted || sum.Event != "kunit_summary" || sum.Passed == nil || *sum.Passed != 3 || sum.Crashed+sum.Failed != 0 {
		t.Fatalf("after the fix: restarted %v, %+v (%s); want a restart and 3 passed", restarted, sum, summary(sum))
	}
	w.stop()
	noStrayProcesses(t, dir)
}

// On a kernel without KUnit (Debian's): a module with a suite is loaded,
// with one line saying its tests cannot run and how to fix that (--once
// exits 1: no results came); the example whose tests are built only for a
// kernel with KUnit builds and loads as a module without suites.
func TestKUnitMissing(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := t.TempDir()
		copyDir(t, "testdata/kunit/bare", dir)
		out, errOut, code := kwatchRun(t, append(v.args(), "--once", "--json", dir)...)
		evs := parseEvents(t, out)
		var told []string
		for _, e := range evs {
			if e.Event == "notice" && strings.Contains(e.Message, "KUnit") {
				told = append(told, e.Message)
			}
		}
		want := "kwkbare has a KUnit suite, but the guest's kernel " + v.Release + " has no KUnit, so its tests do not run: boot a kernel built with CONFIG_KUNIT=y"
		if _, loaded := findEvent(evs, "loaded"); code != 1 || !loaded || len(told) != 1 || !strings.HasPrefix(told[0], want) {
			t.Errorf("exit %d, notices %q; want exit 1, kwkbare loaded and one notice %q:\n%s%s", code, told, want, out, errOut)
		}

		example := t.TempDir()
		copyDir(t, "examples/units-c", example)
		out, errOut, code = kwatchRun(t, append(v.args(), "--once", example)...)
		if code != 0 || !strings.Contains(out, "units: 4K is 4096 bytes") || strings.Contains(out, "has no KUnit") || strings.Contains(out, "kunit ") {
			t.Errorf("examples/units-c: exit %d, want 0, its init line and nothing about KUnit:\n%s%s", code, out, errOut)
		}
		noStrayProcesses(t, dir)
	})
}

package crash

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the detector's output")

// feed runs a whole log through a Detector and flushes it at the end, noting
// for each report the line that completed it.
func feed(lines []string) (reports []Report, at []string) {
	var d Detector
	for i, l := range lines {
		for _, r := range d.Feed(l) {
			reports = append(reports, r)
			at = append(at, fmt.Sprintf("line %d", i+1))
		}
	}
	for _, r := range d.Flush() {
		reports = append(reports, r)
		at = append(at, "flush")
	}
	return reports, at
}

func readLog(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func render(reports []Report, at []string) string {
	if len(reports) == 0 {
		return "no reports\n"
	}
	var b strings.Builder
	for i, r := range reports {
		fmt.Fprintf(&b, "=== %s, complete at %s\n", r.Severity, at[i])
		fmt.Fprintf(&b, "title: %s\n", r.Title)
		fmt.Fprintf(&b, "module: %s (InModule: %v)\n", r.Module, r.InModule(r.Module))
		fmt.Fprintf(&b, "function: %s\n", r.Function)
		for _, l := range r.Lines {
			fmt.Fprintf(&b, "| %s\n", l)
		}
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	logs, err := filepath.Glob("testdata/*.log")
	if err != nil || len(logs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			got := render(feed(readLog(t, path)))
			golden := strings.TrimSuffix(path, ".log") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("reports differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// The headline facts of each fixture, stated here so that a wrong golden
// file cannot hide them.
func TestReports(t *testing.T) {
	type want struct {
		sev      Severity
		title    string
		module   string
		function string
		inModule bool
	}
	tests := []struct {
		log  string
		want []want
	}{
		{"boot", nil},
		{"load-errors", nil},
		{"warn", []want{{Warning, "WARNING: CPU: 0 PID: 90 at /tmp/crashfix/mods/kwwarn.c:6 kwwarn_init+0x5/0x1000 [kwwarn]", "kwwarn", "kwwarn_init+0x5/0x1000", true}}},
		{"warn-message", []want{{Warning, "WARNING: CPU: 0 PID: 93 at /tmp/crashfix/mods/kwwarnmsg.c:6 kwwarnmsg_init+0x16/0x1000 [kwwarnmsg]", "kwwarnmsg", "kwwarnmsg_init+0x16/0x1000", true}}},
		{"interleaved-noise", []want{{Warning, "WARNING: CPU: 0 PID: 93 at /tmp/crashfix/mods/kwwarnmsg.c:6 kwwarnmsg_init+0x16/0x1000 [kwwarnmsg]", "kwwarnmsg", "kwwarnmsg_init+0x16/0x1000", true}}},
		{"refcount", []want{{Warning, "refcount_t: decrement hit 0; leaking memory.", "kwref", "kwref_init+0x25/0x1000", true}}},
		{"scheduling-while-atomic", []want{
			{Oops, "BUG: scheduling while atomic: insmod/99/0x00000002", "kwatomic", "kwatomic_init+0x1b/0x1000", true},
			{Warning, "WARNING: CPU: 0 PID: 99 at init/main.c:1284 do_one_initcall+0x1d7/0x220", "kwatomic", "do_one_initcall+0x1d7/0x220", false},
		}},
		{"soft-lockup", []want{
			{Oops, "BUG: soft lockup - CPU#0 stuck for 3s! [insmod:102]", "kwspin", "kwspin_init+0x1c/0x1000", true},
			{Oops, "BUG: soft lockup - CPU#0 stuck for 6s! [insmod:102]", "kwspin", "kwspin_init+0x1c/0x1000", true},
		}},
		{"hung-task", []want{
			{Warning, "INFO: task insmod:105 blocked for more than 2 seconds.", "kwhang", "kwhang_init+0xf/0x1000", true},
			{Warning, "INFO: task insmod:105 blocked for more than 4 seconds.", "kwhang", "kwhang_init+0xf/0x1000", true},
		}},
		{"oops-null", []want{{Oops, "BUG: kernel NULL pointer dereference, address: 0000000000000000", "kwcrash", "kwcrash_init+0x13/0x1000", true}}},
		{"kmsg-oops", []want{{Oops, "BUG: kernel NULL pointer dereference, address: 0000000000000000", "kwcrash", "kwcrash_init+0x13/0x1000", true}}},
		{"bug-on", []want{{Oops, "kernel BUG at /tmp/crashfix/mods/kwbug.c:6!", "kwbug", "kwbug_init+0x5/0x1000", true}}},
		{"gpf", []want{{Oops, "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#3] PREEMPT SMP NOPTI", "kwgpf", "kwgpf_init+0x94/0x1000", true}}},
		{"list-corruption", []want{{Oops, "list_add double add: new=ffffffffc05dd3c0, prev=ffffffffc05dd000, next=ffffffffc05dd3c0.", "kwlist", "kwlist_init+0x69/0x1000", true}}},
		{"divide-error", []want{{Oops, "divide error: 0000 [#5] PREEMPT SMP NOPTI", "kwdiv", "kwdiv_init+0x11/0x1000", true}}},
		{"slub-double-free", []want{
			{Oops, "BUG kmalloc-64 (Tainted: G      D W  OEL    ): Object already free", "kwfree", "kwfree_init+0x1c/0x1000", true},
			{Oops, "BUG kmalloc-64 (Tainted: G    B D W  OEL    ): Wrong object count. Counter is 14 but counted were 15", "", "", false},
		}},
		// A timer left behind by rmmod: the crash is in kernel code, the module only the likely culprit.
		{"timer-after-unload", []want{{Fatal, "BUG: unable to handle page fault for address: ffffffffc044a3c8", "kwtimer", "__run_timers+0xd3/0x2c0", false}}},
		{"panic-on-oops", []want{{Fatal, "BUG: kernel NULL pointer dereference, address: 0000000000000000", "kwcrash", "kwcrash_init+0x13/0x1000", true}}},
		{"rust-panic-6.1", []want{{Oops, "rust_kernel: panicked at 'attempt to divide by zero', /tmp/crashfix/rust/kwrust.rs:13:5", "kwrust", "", true}}},
		{"rust-panic-newer", []want{{Oops, "rust_kernel: panicked at /tmp/x/kwrust.rs:14:5: attempt to divide by zero", "kwrust",
			"_RNvXCs3tAkUJXrkGd_6kwrustNtB2_6KwRustNtCsfQ0c3Dz3R4h_6kernel13InPlaceModule4init+0x2f/0x40", true}}},
		{"ubsan-panic-on-warn", []want{{Fatal, "UBSAN: array-index-out-of-bounds in /tmp/x/kwubsan.c:9:9", "kwubsan", "kwubsan_init+0x3a/0x1000", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.log, func(t *testing.T) {
			reports, _ := feed(readLog(t, "testdata/"+tt.log+".log"))
			var got []want
			for _, r := range reports {
				got = append(got, want{r.Severity, r.Title, r.Module, r.Function, r.InModule(r.Module)})
				if len(r.Lines) > maxLines+3 {
					t.Errorf("%q: %d lines, want at most %d plus the end lines", r.Title, len(r.Lines), maxLines)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// The same oops read from the console and from /dev/kmsg gives the same report.
func TestConsoleAndKmsgAgree(t *testing.T) {
	console, _ := feed(readLog(t, "testdata/oops-null.log"))
	kmsg, _ := feed(readLog(t, "testdata/kmsg-oops.log"))
	if !reflect.DeepEqual(console, kmsg) {
		t.Errorf("console:\n%s\nkmsg:\n%s", render(console, []string{"?"}), render(kmsg, []string{"?"}))
	}
	noisy, _ := feed(readLog(t, "testdata/interleaved-noise.log"))
	clean, _ := feed(readLog(t, "testdata/warn-message.log"))
	if !reflect.DeepEqual(noisy, clean) {
		t.Errorf("shell output changed the report:\n%s\nwant\n%s", render(noisy, []string{"?"}), render(clean, []string{"?"}))
	}
}

func TestDetectorCompletion(t *testing.T) {
	warn := []string{
		"[    4.977299] ------------[ cut here ]------------",
		"[    4.977299] WARNING: CPU: 0 PID: 90 at /tmp/x/kwwarn.c:6 kwwarn_init+0x5/0x1000 [kwwarn]",
		"[    4.985663]  </TASK>",
	}
	var d Detector
	if d.Pending() {
		t.Fatal("a new detector has a block open")
	}
	if got := d.Feed("[    1.000000] kwwarn: loading out-of-tree module taints kernel."); got != nil || d.Pending() {
		t.Fatalf("an ordinary line gave %v, pending %v", got, d.Pending())
	}
	for _, l := range warn {
		if got := d.Feed(l); got != nil {
			t.Fatalf("Feed(%q) returned %v before the block ended", l, got)
		}
	}
	if !d.Pending() {
		t.Fatal("no block open after a WARNING")
	}
	got := d.Feed("[    4.985761] ---[ end trace 0000000000000000 ]---")
	if len(got) != 1 || got[0].Severity != Warning || len(got[0].Lines) != 4 {
		t.Fatalf("end trace gave %+v, want the 4-line warning", got)
	}
	if d.Pending() || d.Flush() != nil {
		t.Fatal("the block is still open after its end marker")
	}

	// An oops waits after its end marker: x86 prints a register summary and
	// then, with panic_on_oops, the panic that belongs to it.
	for _, l := range []string{
		"[   48.660012] BUG: kernel NULL pointer dereference, address: 0000000000000000",
		"[   48.663492] Oops: 0002 [#1] PREEMPT SMP NOPTI",
		"[   48.744158] ---[ end trace 0000000000000000 ]---",
		"[   48.744478] RIP: 0010:kwcrash_init+0x13/0x1000 [kwcrash]",
		"Killed",
	} {
		if got := d.Feed(l); got != nil {
			t.Fatalf("Feed(%q) returned %v", l, got)
		}
	}
	if !d.Pending() {
		t.Fatal("the oops is not pending")
	}
	got = d.Flush()
	if len(got) != 1 || got[0].Severity != Oops || len(got[0].Lines) != 3 {
		t.Fatalf("Flush gave %+v, want the 3-line oops without the summary", got)
	}
	if d.Pending() || d.Flush() != nil {
		t.Fatal("Flush left a block open")
	}
}

// A header after a finished stack dump starts a new report; one before it
// (a NULL dereference's "Oops:", a Rust panic's BUG) continues the report.
func TestDetectorSplitsReports(t *testing.T) {
	lines := []string{
		"INFO: task insmod:105 blocked for more than 2 seconds.",
		"Call Trace:",
		" <TASK>",
		" kwhang_init+0xf/0x1000 [kwhang]",
		" </TASK>",
		"BUG: kernel NULL pointer dereference, address: 0000000000000000",
		"Oops: 0002 [#1] PREEMPT SMP NOPTI",
		"RIP: 0010:kwcrash_init+0x13/0x1000 [kwcrash]",
	}
	reports, at := feed(lines)
	if len(reports) != 2 || at[0] != "line 6" || at[1] != "flush" {
		t.Fatalf("got %d reports at %v, want 2 at [line 6 flush]", len(reports), at)
	}
	if r := reports[0]; r.Severity != Warning || len(r.Lines) != 5 || !r.InModule("kwhang") {
		t.Errorf("first report %+v, want the 5-line hung task in kwhang", r)
	}
	if r := reports[1]; r.Severity != Oops || len(r.Lines) != 3 || !r.InModule("kwcrash") {
		t.Errorf("second report %+v, want the 3-line oops in kwcrash", r)
	}
}

// A report keeps its head and, past the cap, only its last few ending lines:
// a flood of panic lines (a printk loop, or a panic in a loop) stays bounded.
func TestDetectorCapsLines(t *testing.T) {
	frames := []string{"BUG: soft lockup - CPU#0 stuck for 3s! [insmod:102]"}
	for i := range 100 {
		frames = append(frames, fmt.Sprintf(" frame%d+0x1/0x10", i))
	}
	frames = append(frames, "Kernel panic - not syncing: softlockup: hung tasks", "---[ end Kernel panic - not syncing: softlockup: hung tasks ]---")
	var flood []string
	for i := range 100_001 {
		flood = append(flood, fmt.Sprintf("Kernel panic - not syncing: loop %d", i))
	}
	tests := []struct {
		name  string
		lines []string
		at    string // the line that completes the report
		want  []string
	}{
		{"frames past the cap", frames, fmt.Sprintf("line %d", len(frames)),
			append(append([]string{}, frames[:maxLines]...), "[... 41 lines not shown ...]", frames[101], frames[102])},
		{"a flood of panic lines", flood, "flush",
			append(append([]string{}, flood[:maxLines]...), append([]string{"[... 99936 lines not shown ...]"}, flood[len(flood)-5:]...)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reports, at := feed(tt.lines)
			if len(reports) != 1 || at[0] != tt.at {
				t.Fatalf("got %d reports at %v, want 1 at %s", len(reports), at, tt.at)
			}
			r := reports[0]
			if r.Severity != Fatal || !reflect.DeepEqual(r.Lines, tt.want) {
				t.Errorf("got %s with %d lines, want %d; the last ones:\n%s", r.Severity, len(r.Lines), len(tt.want),
					strings.Join(r.Lines[max(0, len(r.Lines)-8):], "\n"))
			}
		})
	}
}

// A "cut here" block without a header kwatch knows takes its title from
// the next line that says something.
func TestCutHereTitle(t *testing.T) {
	const cut = "------------[ cut here ]------------"
	for _, tt := range []struct {
		name  string
		lines []string
		title string
	}{
		{"next line", []string{cut, "kwx: something odd", "---[ end trace 0000000000000000 ]---"}, "kwx: something odd"},
		{"blank line first", []string{cut, "", "  kwx: something odd"}, "kwx: something odd"},
		{"only blank lines", []string{cut, "", " "}, cut},
		{"alone", []string{cut}, cut},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reports, _ := feed(tt.lines)
			if len(reports) != 1 || reports[0].Title != tt.title {
				t.Fatalf("got %+v, want one report titled %q", reports, tt.title)
			}
		})
	}
}

func TestInModule(t *testing.T) {
	r := Report{Lines: []string{"RIP: 0010:kw_crash_init+0x13/0x1000 [kw_crash]"}}
	for name, want := range map[string]bool{"kw_crash": true, "kw-crash": true, "kwcrash": false, "": false} {
		if got := r.InModule(name); got != want {
			t.Errorf("InModule(%q) = %v, want %v", name, got, want)
		}
	}
	// Without symbols, the module whose init runs ("+") is the witness; a
	// merely loaded one is not.
	loading := Report{Lines: []string{"RIP: 0010:0xffffffff81135958", "Modules linked in: kwb(O) kwa(O+)"}}
	if !loading.InModule("kwa") || loading.InModule("kwb") {
		t.Error("InModule did not pick the loading module")
	}
	// With a symbol in the kernel, it never guesses.
	kernel := Report{Lines: []string{"RIP: 0010:__run_timers+0xd3/0x2c0", "Modules linked in: kwa(O+)"}}
	if kernel.InModule("kwa") {
		t.Error("InModule blamed a loaded module for a crash in kernel code")
	}
}

// Only the line right after a newer Rust panic's location is its message.
func TestRustPanicWithoutMessage(t *testing.T) {
	reports, _ := feed([]string{
		"rust_kernel: panicked at /tmp/x/kwrust.rs:14:5:",
		"------------[ cut here ]------------",
		"kernel BUG at rust/helpers/bug.c:7!",
		"Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
		"CPU: 1 UID: 0 PID: 212 Comm: insmod Tainted: G           O       6.12.8 #1",
	})
	if len(reports) != 1 || reports[0].Title != "rust_kernel: panicked at /tmp/x/kwrust.rs:14:5:" {
		t.Errorf("got %+v", reports)
	}
}

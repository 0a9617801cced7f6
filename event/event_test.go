package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fatih/color"

	"kwatch/kmsg"
)

func TestMS(t *testing.T) {
	for v, want := range map[int64]string{0: "0ms", 41: "41ms", 999: "999ms", 1000: "1.00s", 1240: "1.24s"} {
		if got := ms(v); got != want {
			t.Errorf("ms(%d) = %q, want %q", v, got, want)
		}
	}
}

// A good build shows only its status line; a failed one shows the tail of
// its output above the diagnostics, and a cancelled build's output is not
// mixed into the next one's.
func TestHumanBuildOutput(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	var out bytes.Buffer
	h := NewHuman(&out)
	h.Report(Event{Type: "build_start", Message: "mod"})
	h.BuildLog().Write([]byte("  CC [M]  hello.o\n"))
	h.Report(Event{Type: "build_ok"})
	h.Report(Event{Type: "loaded", Module: "hello.ko", TotalMS: 1240, BuildMS: 1100, UploadMS: 8, ReloadMS: 41})
	h.Report(Event{Type: "loaded", Module: "hello.ko", TotalMS: 400, BuildMS: 310, UploadMS: 8, ReloadMS: 41, Path: "fast"})
	h.Report(Event{Type: "loaded", Module: "hello.ko", TotalMS: 1300, BuildMS: 1200, UploadMS: 8, ReloadMS: 41, Path: "kbuild", Fallback: "Kbuild changed"})
	if strings.Contains(out.String(), "CC [M]") {
		t.Errorf("a good build's output was shown:\n%s", out.String())
	}
	for _, want := range []string{"hello.ko loaded in 1.24s (build 1.10s · upload 8ms · reload 41ms)",
		"hello.ko loaded in 400ms (build 310ms · fast · upload 8ms · reload 41ms)",
		"hello.ko loaded in 1.30s (build 1.20s · kbuild: Kbuild changed · upload 8ms · reload 41ms)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no status line %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	h.Report(Event{Type: "build_start", Message: "mod"})
	h.BuildLog().Write([]byte("from the cancelled build\n"))
	h.Report(Event{Type: "build_start", Message: "mod"})
	for i := 0; i < failedBuildLines+5; i++ {
		h.BuildLog().Write([]byte("line\n"))
	}
	h.BuildLog().Write([]byte("hello.c:3:1: error: oops\n"))
	h.Report(Event{Type: "build_failed", BuildMS: 500, Diagnostics: []string{"hello.c:3:1: error: oops"}, Hint: "fix it"})
	got := out.String()
	for _, want := range []string{"│ … 6 earlier lines", "│ hello.c:3:1: error: oops", "✗ build failed in 500ms", "  hello.c:3:1: error: oops", "hint: fix it", "stays loaded"} {
		if !strings.Contains(got, want) {
			t.Errorf("failed build output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "cancelled build") {
		t.Errorf("a cancelled build's output leaked into the next one:\n%s", got)
	}
}

// A --run command's status line says how it ended: ok, its exit status, or
// why kwatch stopped it.
func TestHumanRunOutput(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	ok, bad := 0, 3
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{Type: KindRunOutput, Command: "cat /dev/x", Exit: &ok, Output: "fact\n"}, "$ cat /dev/x → ok\n  fact\n"},
		{Event{Type: KindRunOutput, Command: "cat /dev/x", Exit: &bad}, "$ cat /dev/x → exit 3\n"},
		{Event{Type: KindRunOutput, Command: "cat /dev/x", Message: "stopped by a new save", Output: "fact\nfa"},
			"$ cat /dev/x → stopped by a new save\n  fact\n  fa\n"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		NewHuman(&out).Report(tt.ev)
		if out.String() != tt.want {
			t.Errorf("%+v shows %q, want %q", tt.ev, out.String(), tt.want)
		}
	}
}

// --json: one object per line, each with its type and time.
func TestJSONReporter(t *testing.T) {
	var out bytes.Buffer
	r := NewJSON(&out)
	exit := 3
	r.Report(Event{Type: "run_output", Time: time.Unix(1, 0), Command: "cat x", Output: "y\n", Exit: &exit})
	r.Report(Event{Type: "loaded", Time: time.Unix(2, 0), Module: "m.ko", TotalMS: 12, Path: "kbuild"})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e["event"] != "run_output" || e["exit"] != 3.0 || e["command"] != "cat x" || e["time"] == nil {
		t.Errorf("run_output event: %v", e)
	}
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e["total_ms"] != 12.0 || e["path"] != "kbuild" {
		t.Errorf("loaded event: %v (%v)", e, err)
	}
}

func TestWithStats(t *testing.T) {
	var r recorder
	stats := WithStats(&r)
	stats.Report(Event{Type: KindBuildStart})
	stats.Report(Event{Type: KindLoaded, Module: "m.ko"})
	if len(r) != 2 || r[0].Goroutines != 0 || r[1].Goroutines < 1 || r[1].Module != "m.ko" {
		t.Errorf("events %+v: want the goroutine count on the loaded event only", r)
	}
}

// recorder keeps the events reported to it, from one goroutine.
type recorder []Event

func (r *recorder) Report(e Event) { *r = append(*r, e) }

// Text from the guest reaches the terminal with its control characters made
// visible; kwatch's own colours stay.
func TestHumanNeutralisesControls(t *testing.T) {
	saved := color.NoColor
	color.NoColor = false
	t.Cleanup(func() { color.NoColor = saved })
	exit := 0
	hostile := "x\x1b[2J\a\ry\x9b31m\u009b\x00"
	tests := []struct {
		name string
		ev   Event
		want []string
	}{
		{"kmsg", Kmsg(kmsg.Record{Level: 6, Message: "evil: " + hostile + "\nnext line"}),
			[]string{`evil: x\x1b[2J\x07\x0dy\x9b31m\x9b\x00`, "next line"}},
		{"run output", Event{Type: "run_output", Command: "cat /dev/evil", Exit: &exit, Output: "out " + hostile + "\r\nsecond\r\n"},
			[]string{`out x\x1b[2J\x07\x0dy\x9b31m\x9b\x00`, "  second\n", "\x1b[32;1mok"}},
		{"load failed", Event{Type: "load_failed", Module: "m", Message: "insmod: " + hostile},
			[]string{`insmod: x\x1b[2J`}},
		{"crash", Event{Type: "crash", Severity: "oops", Title: "BUG " + hostile, Lines: []string{"RIP " + hostile}},
			[]string{`BUG x\x1b[2J`, `RIP x\x1b[2J`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			NewHuman(&out).Report(tt.ev)
			got := out.String()
			for _, bad := range []string{"\x1b[2J", "\a", "\r", "\x9b", "\u009b", "\x00"} {
				if strings.Contains(got, bad) {
					t.Errorf("output holds the raw %q:\n%q", bad, got)
				}
			}
			for _, want := range tt.want {
				if !strings.Contains(got, want) {
					t.Errorf("output lacks %q:\n%q", want, got)
				}
			}
		})
	}
}

func TestHumanKUnit(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	wd := t.TempDir()
	for _, tt := range []struct {
		ev   Event
		want string
	}{
		{Event{Type: KindKUnitCase, Suite: "units", Case: "units_plain", Status: "pass"}, ""},
		{Event{Type: KindKUnitCase, Suite: "units", Case: "units_later", Status: "skip", Message: "not yet"}, ""},
		{Event{Type: KindKUnitCase, Suite: "units", Case: "units_suffixes", Param: "3G", Status: "fail", File: wd + "/parse_test.c", Line: 43,
			Message: "Expected bytes == c->want, but\nbytes == 3145728 (0x300000)\nc->want == 3221225472 (0xc0000000)"},
			"✗ units.units_suffixes[3G] failed at parse_test.c:43: Expected bytes == c->want, but bytes == 3145728 (0x300000); c->want == 3221225472 (0xc0000000)\n"},
		{Event{Type: KindKUnitCase, Suite: "kwk", Case: "case 2", Status: "crash", Message: "the kernel oopsed while it ran: BUG: x"},
			"✗ kwk.case 2 crashed: the kernel oopsed while it ran: BUG: x\n"},
		{Event{Type: KindKUnitCase, Suite: "kwk", Status: "fail", File: "/elsewhere/t.c", Line: 3}, "✗ kwk failed at /elsewhere/t.c:3\n"},
		{Event{Type: KindKUnitSum, KUnitSummary: &KUnitSummary{Passed: 12, Failed: 1, Skipped: 1, MS: 41}}, "✗ kunit 12 passed · 1 failed · 1 skipped (41ms)\n"},
		{Event{Type: KindKUnitSum, KUnitSummary: &KUnitSummary{Passed: 4, MS: 3}}, "✓ kunit 4 passed (3ms)\n"},
		{Event{Type: KindKUnitSum, KUnitSummary: &KUnitSummary{Passed: 1, Crashed: 2}}, "✗ kunit 1 passed · 2 crashed (0ms)\n"},
	} {
		var out bytes.Buffer
		h := NewHuman(&out)
		h.wd = wd
		h.Report(tt.ev)
		if out.String() != tt.want {
			t.Errorf("%+v shows %q, want %q", tt.ev, out.String(), tt.want)
		}
	}
}

type hinted struct{ msg, hint string }

func (e *hinted) Error() string { return e.msg }
func (e *hinted) Hint() string  { return e.hint }

// hintedWrap has a hint of its own, maybe none, and wraps err.
type hintedWrap struct {
	hint string
	err  error
}

func (e *hintedWrap) Error() string { return "wrapped: " + e.err.Error() }
func (e *hintedWrap) Hint() string  { return e.hint }
func (e *hintedWrap) Unwrap() error { return e.err }

// An error's hint is found however deep it is wrapped; the first error in
// the chain with a hint has the say, and one without does not hide another's.
func TestHint(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("plain"), ""},
		{&hinted{"m", "do this"}, "do this"},
		{fmt.Errorf("building: %w", &hinted{"m", "do this"}), "do this"},
		{&hinted{"outer", "outer's"}, "outer's"},
		{fmt.Errorf("a: %w", errors.Join(errors.New("x"), &hinted{"m", "joined"})), "joined"},
		{&hintedWrap{"", &hinted{"m", "inner's"}}, "inner's"},
		{&hintedWrap{"outer's", &hinted{"m", "inner's"}}, "outer's"},
		{&hintedWrap{"", errors.New("plain")}, ""},
	} {
		if got := Hint(tt.err); got != tt.want {
			t.Errorf("Hint(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// An error event carries its error's hint, and a person sees both.
func TestErrorEvent(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	var r recorder
	Error(&r, fmt.Errorf("keeping a copy: %w", &hinted{"disk full", "free some space"}))
	if len(r) != 1 || r[0].Type != KindError || r[0].Message != "keeping a copy: disk full" || r[0].Hint != "free some space" {
		t.Fatalf("events %+v, want one error event with the hint", r)
	}
	var out bytes.Buffer
	NewHuman(&out).Report(r[0])
	if want := "kwatch: error: keeping a copy: disk full\nkwatch: hint: free some space\n"; out.String() != want {
		t.Errorf("shows %q, want %q", out.String(), want)
	}
}

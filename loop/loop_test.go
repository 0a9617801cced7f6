package loop

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fatih/color"

	"kwatch/kmsg"
	"kwatch/watcher"
)

func TestTouchesConfig(t *testing.T) {
	tests := []struct {
		b    watcher.Batch
		want bool
	}{
		{watcher.Batch{Changed: []string{"src/hello.c"}}, false},
		{watcher.Batch{Changed: []string{"src/hello.c", "module.nix"}}, true},
		{watcher.Batch{Removed: []string{"flake.lock"}}, true},
		{watcher.Batch{Changed: []string{"sub/flake.lock"}}, true},
		{watcher.Batch{Changed: []string{"nix.c"}}, false},
		{watcher.Batch{Rescan: true}, true},
	}
	for _, tt := range tests {
		if got := touchesConfig(tt.b); got != tt.want {
			t.Errorf("touchesConfig(%+v) = %v, want %v", tt.b, got, tt.want)
		}
	}
}

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
		{Event{Type: EventRunOutput, Command: "cat /dev/x", Exit: &ok, Output: "fact\n"}, "$ cat /dev/x → ok\n  fact\n"},
		{Event{Type: EventRunOutput, Command: "cat /dev/x", Exit: &bad}, "$ cat /dev/x → exit 3\n"},
		{Event{Type: EventRunOutput, Command: "cat /dev/x", Message: "stopped by a new save", Output: "fact\nfa"},
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
	var r events
	stats := WithStats(&r)
	stats.Report(Event{Type: EventBuildStart})
	stats.Report(Event{Type: EventLoaded, Module: "m.ko"})
	if len(r.e) != 2 || r.e[0].Goroutines != 0 || r.e[1].Goroutines < 1 || r.e[1].Module != "m.ko" {
		t.Errorf("events %+v: want the goroutine count on the loaded event only", r.e)
	}
}

type events struct {
	mu sync.Mutex
	e  []Event
}

func (r *events) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.e = append(r.e, e)
}

func (r *events) crashes() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c []Event
	for _, e := range r.e {
		if e.Type == "crash" {
			c = append(c, e)
		}
	}
	return c
}

const oopsLog = `BUG: kernel NULL pointer dereference, address: 0000000000000000
#PF: supervisor write access in kernel mode
Oops: 0002 [#1] PREEMPT SMP NOPTI
CPU: 0 PID: 127 Comm: insmod Tainted: G           OE      6.1.0-56-amd64 #1  Debian 6.1.192-2
RIP: 0010:m_init+0x11/0x1000 [kwfault]
Call Trace:
 <TASK>
 do_one_initcall+0x59/0x220
 </TASK>
Modules linked in: kwfault(OE+) e1000
---[ end trace 0000000000000000 ]---`

// The same oops read from the console and from /dev/kmsg is one report; it
// is blamed on the module and marks the current boot dirty.
func TestCrashWatchDedupesAndMarksDirty(t *testing.T) {
	r := &events{}
	boot := "boot-1"
	w := newCrashWatch(r, func() string { return boot })
	w.setModule("kwfault", "")
	for _, l := range strings.Split(oopsLog, "\n") {
		w.kmsgLine(l)
		w.feed(&w.serial, "[    6.1] "+l)
	}
	w.flush(&w.kmsg)
	w.flush(&w.serial)
	c := r.crashes()
	if len(c) != 1 {
		t.Fatalf("%d crash events, want 1: %+v", len(c), c)
	}
	if c[0].Severity != "oops" || c[0].InModule == nil || !*c[0].InModule {
		t.Errorf("crash event %+v, want an oops in kwfault", c[0])
	}
	if !w.crashedSince("kwfault", time.Now().Add(-time.Minute)) {
		t.Error("crashedSince does not blame kwfault")
	}
	if w.dirtyNow() == "" {
		t.Fatal("an oops did not mark the guest dirty")
	}
	// Dirt belongs to a boot: after a restart the guest is clean.
	boot = "boot-2"
	if d := w.dirtyNow(); d != "" {
		t.Errorf("a new boot is still dirty: %q", d)
	}
	boot = "boot-1"
	if w.takeDirty() == "" || w.dirtyNow() != "" {
		t.Error("takeDirty did not hand over and clear the dirty mark")
	}
}

// keptOutput keeps the head and the tail of what is written to it, however
// it comes, and says how much lies between.
func TestKeptOutput(t *testing.T) {
	tests := []struct {
		writes []string
		want   string
	}{
		{[]string{"ab"}, "ab"},
		{[]string{"abcd", "efgh"}, "abcdefgh"},
		{[]string{"abcdefghij"}, "abcd\n[... 2 bytes cut ...]\nghij"},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"}, "abcd\n[... 5 bytes cut ...]\njklm"},
		{[]string{"abc\n", strings.Repeat("x", 1000), "end\n"}, "abc\n[... 1000 bytes cut ...]\nend\n"},
		{[]string{"a\nbc", strings.Repeat("x", 1000), "\nend"}, "a\n[... 1003 bytes cut ...]\nend"},
	}
	for _, tt := range tests {
		k := &keptOutput{keep: 4}
		for _, w := range tt.writes {
			k.Write([]byte(w))
		}
		if got := k.String(); got != tt.want {
			t.Errorf("after writes %q: %q, want %q", tt.writes, got, tt.want)
		}
		if len(k.tail) > 2*k.keep {
			t.Errorf("after writes %q: %d bytes of tail kept", tt.writes, len(k.tail))
		}
	}
}

// consoleLog appends text to the console log at path, as the VM does.
func consoleLog(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// The console reader keeps no more than one line of a console that never
// ends its line (and finds the oops after it), and reads a log rotated under it to its end before it
// goes on with the new file: an oops split by the rotation is one report.
func TestConsoleReader(t *testing.T) {
	oops := strings.Split(oopsLog, "\n")
	stamp := func(lines []string) string { return "[    6.1] " + strings.Join(lines, "\r\n[    6.1] ") + "\r\n" }
	tests := []struct {
		name   string
		writes []func(path string)
		crash  bool // an oops in kwfault is reported, with its RIP line
	}{
		{"a line that never ends", []func(string){
			func(path string) { consoleLog(t, path, strings.Repeat("x", 10<<20)) },
			func(path string) { consoleLog(t, path, strings.Repeat("x", 10<<10)+"\r\n"+stamp(oops)) },
		}, true},
		{"an oops split by a rotation", []func(string){
			func(path string) { consoleLog(t, path, stamp(oops[:2])) },
			func(path string) {
				consoleLog(t, path, stamp(oops[2:]))
				if err := os.Rename(path, path+".1"); err != nil {
					t.Fatal(err)
				}
				consoleLog(t, path, "[    7.0] after the rotation\r\n")
			},
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &events{}
			w := newCrashWatch(r, func() string { return "boot-1" })
			w.setModule("kwfault", "")
			path := filepath.Join(t.TempDir(), "console.log")
			consoleLog(t, path, "[    1.0] before kwatch\r\n")
			w.followConsole(path)
			for _, write := range tt.writes {
				write(path)
				w.readConsole()
				if len(w.partial) > maxConsoleLine {
					t.Errorf("the reader keeps %d bytes of an unfinished line, want at most %d", len(w.partial), maxConsoleLine)
				}
			}
			w.flush(&w.serial)
			c := r.crashes()
			if got := len(c) == 1 && c[0].Function == "m_init+0x11/0x1000" && *c[0].InModule; got != tt.crash {
				t.Errorf("crash events %+v; want an oops in kwfault's m_init: %v", c, tt.crash)
			}
		})
	}
}

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
		{"kmsg", Event{Type: "kmsg", record: &kmsg.Record{Level: 6, Message: "evil: " + hostile + "\nnext line"}},
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

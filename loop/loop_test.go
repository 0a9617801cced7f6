package loop

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kwatch/event"
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

type events struct {
	mu sync.Mutex
	e  []event.Event
}

func (r *events) Report(e event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.e = append(r.e, e)
}

func (r *events) crashes() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c []event.Event
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

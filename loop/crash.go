package loop

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"kwatch/crash"
	"kwatch/debuginfo"
	"kwatch/event"
)

const (
	// A crash report is complete once its channel has been quiet this long.
	crashQuiet = time.Second
	// The same report seen on the console and in /dev/kmsg within this
	// window is one crash.
	crashDedupe = 10 * time.Second
	consolePoll = 250 * time.Millisecond
)

// crashWatch finds crash reports in the guest's kernel log, on two channels:
// /dev/kmsg (through SSH, detailed but gone with the guest) and the serial
// console log (slower, but it keeps a panic's last words). Each report is
// reported once, and one that hurt the guest marks it dirty.
type crashWatch struct {
	report event.Reporter
	bootID func() string // the guest's current boot, which a dirty mark belongs to
	kmsg   crashChannel
	serial crashChannel

	mu        sync.Mutex
	module    string               // the user's module, for "in your module"
	ko        string               // its unstripped build, for source lines
	seen      map[string]time.Time // report titles, for the dedupe
	dirty     string               // why the guest needs a restart; "" when it is fine
	dirtyBoot string               // the boot that is dirty: a restarted guest is clean
	last      crash.Report         // the newest Oops or worse
	lastAt    time.Time
	onOops    func(title string) // called for each new Oops or worse; nil for none

	// The console reader's place; guarded by consoleMu so drainConsole can run
	// from the guest's owner (before it boots the VM again) while the tailer goroutine polls.
	consoleMu sync.Mutex
	console   string
	f         *os.File // the console log, nil until it could be opened
	off       int64
	partial   []byte // the line read up to its end so far
	overlong  bool   // the line being read is too long to be the kernel's: dropped
}

// crashChannel is one log channel's detector, flushed after crashQuiet of silence.
type crashChannel struct {
	mu    sync.Mutex
	det   crash.Detector
	timer *time.Timer
}

func newCrashWatch(r event.Reporter, bootID func() string) *crashWatch {
	return &crashWatch{report: r, bootID: bootID, seen: map[string]time.Time{}}
}

// setModule names the module the user is working on and its newest build.
func (w *crashWatch) setModule(name, ko string) {
	w.mu.Lock()
	w.module, w.ko = name, ko
	w.mu.Unlock()
}

// feed passes one line of a channel to its detector.
func (w *crashWatch) feed(ch *crashChannel, line string) {
	ch.mu.Lock()
	reports := ch.det.Feed(line)
	if ch.det.Pending() {
		if ch.timer == nil {
			ch.timer = time.AfterFunc(crashQuiet, func() { w.flush(ch) })
		} else {
			ch.timer.Reset(crashQuiet)
		}
	}
	ch.mu.Unlock()
	w.emit(reports)
}

func (w *crashWatch) flush(ch *crashChannel) {
	ch.mu.Lock()
	reports := ch.det.Flush()
	ch.mu.Unlock()
	w.emit(reports)
}

func (w *crashWatch) emit(reports []crash.Report) {
	for _, r := range reports {
		w.mu.Lock()
		at, dup := w.seen[r.Title]
		dup = dup && time.Since(at) < crashDedupe
		w.seen[r.Title] = time.Now()
		module, ko := w.module, w.ko
		onOops := w.onOops
		if r.Severity >= crash.Oops && !dup {
			w.last, w.lastAt = r, time.Now()
		} else {
			onOops = nil
		}
		w.mu.Unlock()
		if r.Severity >= crash.Oops && !dup {
			w.markDirty(r.Severity.String() + ": " + r.Title)
		}
		if dup {
			continue
		}
		e := event.Event{Type: event.KindCrash, Time: time.Now(), Severity: r.Severity.String(), Title: r.Title,
			Lines: r.Lines, Module: r.Module, Function: r.Function}
		if module != "" {
			in := r.InModule(module)
			e.InModule, e.UserModule = &in, module
			if in && r.Function != "" {
				e.Source = debuginfo.Source(context.Background(), ko, r.Function, r.Return)
			}
		}
		w.report.Report(e)
		if onOops != nil {
			onOops(r.Title)
		}
	}
}

// whenOops calls fn once the next Oops or worse is reported, until stop is
// called: a case of a module's KUnit suite that oopses keeps insmod waiting
// (on 6.1 for KUnit's 300 s timeout), and the loop must not wait for it.
func (w *crashWatch) whenOops(fn func(title string)) (stop func()) {
	w.mu.Lock()
	w.onOops = fn
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.onOops = nil
		w.mu.Unlock()
	}
}

// takeDirty returns why the guest's current boot needs a restart, and
// forgets it: the caller restarts it.
func (w *crashWatch) takeDirty() string {
	d := w.dirtyNow()
	w.mu.Lock()
	w.dirty = ""
	w.mu.Unlock()
	return d
}

// dirtyNow returns why the guest's current boot needs a restart, or "".
func (w *crashWatch) dirtyNow() string {
	boot := w.bootID()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirtyBoot != boot {
		return ""
	}
	return w.dirty
}

// markDirty notes that the guest's current boot needs a restart.
func (w *crashWatch) markDirty(why string) {
	boot := w.bootID()
	w.mu.Lock()
	w.dirty, w.dirtyBoot = why, boot
	w.mu.Unlock()
}

// crashedSince reports whether an Oops or worse blamed on module name was
// seen after t.
func (w *crashWatch) crashedSince(name string, t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastAt.After(t) && w.last.InModule(name)
}

// kmsgLine feeds one /dev/kmsg record (which may span lines).
func (w *crashWatch) kmsgLine(msg string) {
	for _, l := range strings.Split(msg, "\n") {
		w.feed(&w.kmsg, l)
	}
}

// maxConsoleLine bounds what the console reader keeps of a line that has not
// ended yet: a guest printing without newlines must not grow it. No printk
// line is that long, so a longer one is dropped, up to its end.
const maxConsoleLine = 4 << 10

// tailConsole follows the console log at path from its current end until ctx
// is done.
func (w *crashWatch) tailConsole(ctx context.Context, path string) {
	w.followConsole(path)
	defer func() {
		w.consoleMu.Lock()
		defer w.consoleMu.Unlock()
		if w.f != nil {
			w.f.Close()
			w.f = nil
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(consolePoll):
		}
		w.readConsole()
	}
}

// followConsole starts reading the console log at path from its current end.
func (w *crashWatch) followConsole(path string) {
	w.consoleMu.Lock()
	defer w.consoleMu.Unlock()
	w.console = path
	w.openConsole(true)
}

// openConsole opens the console log, at its end when fromEnd; the caller
// holds consoleMu. The file stays open: when the log is rotated, what was
// written to it last is read from the old file.
func (w *crashWatch) openConsole(fromEnd bool) {
	f, err := os.Open(w.console)
	if err != nil {
		return
	}
	w.f, w.off, w.partial, w.overlong = f, 0, nil, false
	if fi, err := f.Stat(); err == nil && fromEnd {
		w.off = fi.Size()
	}
}

// drainConsole reads what the console log holds now and completes any report
// in it: called before a dead VM is booted again, which truncates the log.
func (w *crashWatch) drainConsole() {
	w.readConsole()
	w.flush(&w.serial)
}

// readConsole reads what was added to the console log since the last call. A
// new boot truncates the log: reading then starts over. A rotation renames
// it and starts a new one: the old file is read to its end first.
func (w *crashWatch) readConsole() {
	w.consoleMu.Lock()
	defer w.consoleMu.Unlock()
	if w.console == "" {
		return
	}
	if w.f == nil {
		if w.openConsole(false); w.f == nil {
			return
		}
	}
	// Stat before reading: a rotation seen now happened before the read, so
	// the read finds all the old file will ever hold.
	now, err := os.Stat(w.console)
	w.readFile()
	if fi, ferr := w.f.Stat(); err == nil && ferr == nil && !os.SameFile(now, fi) {
		w.f.Close()
		w.f = nil
		if w.openConsole(false); w.f != nil {
			w.readFile()
		}
	}
}

// readFile feeds the lines added to the open console log; the caller holds
// consoleMu.
func (w *crashWatch) readFile() {
	if fi, err := w.f.Stat(); err == nil && fi.Size() < w.off {
		w.off, w.partial, w.overlong = 0, nil, false
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.ReadAt(buf, w.off)
		w.off += int64(n)
		w.consoleLines(buf[:n])
		if err != nil || n == 0 {
			return
		}
	}
}

// consoleLines feeds the complete lines of b, after what was kept of an
// unfinished line, and keeps the rest.
func (w *crashWatch) consoleLines(b []byte) {
	rest := append(w.partial, b...)
	for {
		i := bytes.IndexByte(rest, '\n')
		switch {
		case i >= 0:
			if !w.overlong {
				w.feed(&w.serial, strings.TrimRight(string(rest[:i]), "\r"))
			}
			w.overlong = false
			rest = rest[i+1:]
		case len(rest) > maxConsoleLine:
			w.overlong, rest = true, nil
		default:
			w.partial = append(w.partial[:0:0], rest...)
			return
		}
	}
}

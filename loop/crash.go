package loop

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"kwatch/crash"
	"kwatch/debuginfo"
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
	report Reporter
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

	// The console reader's place; guarded by consoleMu so drainConsole can run
	// from the guest's owner (before it boots the VM again) while the tailer goroutine polls.
	consoleMu sync.Mutex
	console   string
	off       int64
	partial   []byte
}

// crashChannel is one log channel's detector, flushed after crashQuiet of silence.
type crashChannel struct {
	mu    sync.Mutex
	det   crash.Detector
	timer *time.Timer
}

func newCrashWatch(r Reporter, bootID func() string) *crashWatch {
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
		if r.Severity >= crash.Oops && !dup {
			w.last, w.lastAt = r, time.Now()
		}
		w.mu.Unlock()
		if r.Severity >= crash.Oops && !dup {
			w.markDirty(r.Severity.String() + ": " + r.Title)
		}
		if dup {
			continue
		}
		e := Event{Type: EventCrash, Time: time.Now(), Severity: r.Severity.String(), Title: r.Title,
			Lines: r.Lines, Module: r.Module, Function: r.Function}
		if module != "" {
			in := r.InModule(module)
			e.InModule, e.UserModule = &in, module
			if in && r.Function != "" {
				e.Source = debuginfo.Source(context.Background(), ko, r.Function, r.Return)
			}
		}
		w.report.Report(e)
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

// tailConsole follows the console log at path from its current end until ctx
// is done. A new boot truncates the log; reading then starts over.
func (w *crashWatch) tailConsole(ctx context.Context, path string) {
	w.consoleMu.Lock()
	w.console = path
	if fi, err := os.Stat(path); err == nil {
		w.off = fi.Size()
	}
	w.consoleMu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(consolePoll):
		}
		w.readConsole()
	}
}

// drainConsole reads what the console log holds now and completes any report
// in it: called before a dead VM is booted again, which truncates the log.
func (w *crashWatch) drainConsole() {
	w.readConsole()
	w.flush(&w.serial)
}

func (w *crashWatch) readConsole() {
	w.consoleMu.Lock()
	defer w.consoleMu.Unlock()
	if w.console == "" {
		return
	}
	f, err := os.Open(w.console)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < w.off {
		w.off, w.partial = 0, nil
	}
	if _, err := f.Seek(w.off, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(f)
	w.off += int64(len(b))
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.partial[:i]), "\r")
		w.partial = w.partial[i+1:]
		w.feed(&w.serial, line)
	}
}

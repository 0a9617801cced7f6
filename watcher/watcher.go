// Package watcher watches a kernel module's source tree and turns the stream
// of inotify events into debounced batches of changed build inputs.
//
// Design decisions, most of them based on event sequences measured with real
// editors and git:
//
//   - Directories are watched, never files: vim, JetBrains and sed -i save by
//     renaming a temporary over the file, which would drop a file watch.
//   - fsnotify has no recursive mode and `mkdir -p a/b/c && echo > a/b/c/x.c`
//     yields only "CREATE a". So a new directory is watched first and walked
//     afterwards, and every input found inside is reported as changed.
//   - A batch closes Settle (5 ms) after its last event once every file in
//     it is complete: closed after writing, or renamed into place. Then the
//     build starts at once instead of after a guess at when the editor is
//     done. Otherwise it closes after Quiet (75 ms) without a relevant event:
//     while some file is still being written (or is removed, or only touched
//     by a path-based utimes), and during a burst, when the batch opened
//     less than Quiet after the last one closed (a save storm, a script
//     rewriting files one by one): the first save's build starts at once,
//     the rest of the burst waits to be one batch. A vim save takes about
//     1 ms and a 200-file git checkout 14 ms, so both waits swallow whole
//     bursts. MaxWait (1 s) after it opened is the cap: one timer armed when
//     the batch opens, so a steady stream of writes cannot postpone a build
//     forever.
//   - Completion comes from a second inotify instance (closes.go), because
//     fsnotify does not export IN_CLOSE_WRITE and reports IN_MOVED_TO as a
//     plain Create.
//   - What changed is decided when the batch closes, by os.Lstat of each
//     collected path, not from the event ops: every editor emits a different
//     sequence of renames and temporaries, but only the final state matters to
//     the build. Temporaries that came and went are never relevant by name
//     and are filtered out as soon as their events arrive.
//   - Kbuild writes its outputs next to the sources, so the ignore rules (and
//     the whitelist of input names) are what keep a build from triggering
//     itself.
//   - fsnotify's Events and Errors channels are unbuffered, so one goroutine
//     (run) only drains them and keeps the batch. Adding watches and walking
//     new directories can take long on a big tree, so a second goroutine
//     (walk) does that work, fed by an unbounded queue that never blocks run.
package watcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Defaults for Options; see the package comment for why.
const (
	DefaultQuiet   = 75 * time.Millisecond
	DefaultSettle  = 5 * time.Millisecond
	DefaultMaxWait = time.Second
)

// touchWindow is how recent a file's mtime must be for a Chmod-only event to
// count as a change: touch(1) shows up on inotify as a bare attribute change,
// and kernel developers touch a file to force a rebuild, while chmod leaves
// the mtime alone. The window allows for event delivery lag on a busy machine.
const touchWindow = time.Second

// Options tune a Watcher; the zero value gives the defaults.
type Options struct {
	Quiet   time.Duration // trailing quiet period closing a batch; 0 means 75ms
	Settle  time.Duration // shorter quiet period once every file in the batch is complete; 0 means 5ms
	MaxWait time.Duration // hard cap from the first event of a batch; 0 means 1s
	Ignore  []string      // extra ignore patterns (gitignore syntax), e.g. the state dir relative to Root
}

// Batch is one debounced set of relevant changes, paths relative to the root, sorted.
type Batch struct {
	Changed []string // relevant input files that exist at batch close (created or modified)
	Removed []string // relevant input files that are gone at batch close
	Rescan  bool     // the kernel queue overflowed: anything may have changed
}

// Watcher watches one source tree. Create it with New and stop it with Close.
type Watcher struct {
	root    string // absolute, symlinks resolved
	opts    Options
	rules   *rules
	fsw     *fsnotify.Watcher
	closes  *closeWatch
	done    chan string // closes → run: absolute paths of completed files
	batches chan Batch
	errs    chan error
	jobs    jobQueue  // run → walk, never blocks run
	results chan scan // walk → run
	stop    chan struct{}
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// Owned by run once New has returned.
	tree     tree              // watched directories and the inputs in them
	walking  map[string]int    // directories with a walk queued or running
	pending  map[string]change // relevant paths seen in the open batch
	rescan   bool              // the open batch follows a queue overflow
	open     bool              // a batch is collecting
	burst    bool              // it opened less than Quiet after the last batch closed
	closedAt time.Time         // when the last batch closed
	quiet    *time.Timer
	deadline *time.Timer
	outbox   map[string]bool      // closed but unsent changes: true changed, false removed
	outRes   bool                 // the unsent changes include a rescan
	sent     map[string]time.Time // modification time of each file when last reported changed
}

// change is what the open batch knows about one path.
type change struct {
	content  bool      // an event other than Chmod arrived
	attribAt time.Time // when the first Chmod arrived
	complete bool      // the file was closed after writing or renamed into place
}

// New walks root, adds a watch per non-ignored directory (never following symlinks) and starts watching.
func New(root string, opts Options) (*Watcher, error) {
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	opts.Settle = min(opts.Settle, opts.Quiet) // a shorter --debounce wins
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	abs, err := resolveRoot(root)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", root, err)
	}
	r, err := newRules(abs, opts.Ignore)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", root, err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, explainLimit(abs, err)
	}
	closes, err := newCloseWatch()
	if err != nil {
		fsw.Close()
		return nil, explainLimit(abs, err)
	}
	w := &Watcher{
		root:     abs,
		opts:     opts,
		rules:    r,
		fsw:      fsw,
		closes:   closes,
		done:     make(chan string),
		batches:  make(chan Batch),
		errs:     make(chan error, 16),
		jobs:     jobQueue{wake: make(chan struct{}, 1)},
		results:  make(chan scan),
		stop:     make(chan struct{}),
		walking:  map[string]int{},
		pending:  map[string]change{},
		quiet:    stoppedTimer(),
		deadline: stoppedTimer(),
		outbox:   map[string]bool{},
		sent:     map[string]time.Time{},
	}
	w.tree, err = w.watchTree(".")
	if err != nil {
		fsw.Close()
		closes.close()
		return nil, err
	}
	if warn := remoteWarning(abs); warn != nil {
		w.report(warn)
	}
	w.wg.Add(3)
	go w.run()
	go w.walk()
	go func() {
		defer w.wg.Done()
		if err := w.closes.read(w.done, w.stop); err != nil {
			w.report(fmt.Errorf("watching %s: %w; builds now start %s after the last change", abs, err, opts.Quiet))
		}
	}()
	return w, nil
}

// resolveRoot returns root as an absolute path without symlinks, so that
// event paths can be made relative to it.
func resolveRoot(root string) (string, error) {
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Stat(abs)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "", pe.Err // the caller names the path already
	}
	if err == nil && !fi.IsDir() {
		return "", errors.New("not a directory")
	}
	return abs, err
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// Batches delivers one Batch per burst of relevant changes. It is closed by Close.
func (w *Watcher) Batches() <-chan Batch { return w.batches }

// Errors delivers non-fatal problems, such as a new directory that could not
// be watched. Reading it is optional: errors are dropped when nobody reads.
// It is closed by Close.
func (w *Watcher) Errors() <-chan error { return w.errs }

// Relevant reports whether the path (relative to root, slash-separated) is a build input that kwatch should react to.
func (w *Watcher) Relevant(rel string) bool { return w.rules.relevant(rel) }

// Close stops watching, waits for the watcher's goroutines and closes Batches and Errors.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		// Closing fsnotify first ends its reader, which may be blocked sending
		// to run; only then can run and walk be stopped safely.
		w.closeErr = w.fsw.Close()
		close(w.stop)
		w.closes.close()
		w.wg.Wait()
		close(w.batches)
		close(w.errs)
	})
	return w.closeErr
}

// report passes a non-fatal error on without ever blocking.
func (w *Watcher) report(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

// run drains fsnotify and owns the batch. It never blocks on anything but its select.
func (w *Watcher) run() {
	defer w.wg.Done()
	var next Batch // the outbox as a Batch, valid while out is not nil
	for {
		var out chan<- Batch
		if len(w.outbox) > 0 || w.outRes {
			out = w.batches
		}
		select {
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			w.handle(ev)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			w.handleError(err)
		case name := <-w.done:
			w.handleComplete(name)
		case s := <-w.results:
			w.merge(s)
		case <-w.quiet.C:
			// A walk still running may add files to this batch; its result re-arms the timer.
			if len(w.walking) == 0 {
				w.closeBatch()
				next = w.outboxBatch()
			}
		case <-w.deadline.C:
			w.closeBatch()
			next = w.outboxBatch()
		case out <- next:
			clear(w.outbox)
			w.outRes = false
		case <-w.stop:
			return
		}
	}
}

// activity opens a batch if none is open and restarts its quiet period:
// Settle when every file in it is complete, outside a burst; Quiet otherwise.
func (w *Watcher) activity() {
	if !w.open {
		w.open = true
		w.burst = time.Since(w.closedAt) < w.opts.Quiet
		w.deadline.Reset(w.opts.MaxWait)
	}
	wait := w.opts.Settle
	if w.burst || w.rescan || len(w.walking) > 0 {
		wait = w.opts.Quiet
	}
	for _, c := range w.pending {
		if !c.complete {
			wait = w.opts.Quiet
			break
		}
	}
	w.quiet.Reset(wait)
}

// handleComplete marks a file as complete: closed after writing or renamed
// into place. fsnotify's events for the same save may arrive before or
// after this, so they never undo it.
func (w *Watcher) handleComplete(name string) {
	rel, ok := w.rel(name)
	if !ok || !w.rules.relevant(rel) {
		return
	}
	c := w.pending[rel]
	c.content, c.complete = true, true
	w.pending[rel] = c
	w.activity()
}

func (w *Watcher) handle(ev fsnotify.Event) {
	rel, ok := w.rel(ev.Name)
	if !ok {
		return
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() && !w.rules.excluded(rel, true) {
			w.queueWalk(job{dir: rel})
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		w.dropDir(rel)
	}
	if !w.rules.relevant(rel) {
		return
	}
	c := w.pending[rel]
	if ev.Op&^fsnotify.Chmod != 0 {
		c.content = true
	} else if c.attribAt.IsZero() {
		c.attribAt = time.Now()
	}
	w.pending[rel] = c
	w.activity()
}

func (w *Watcher) handleError(err error) {
	if !errors.Is(err, fsnotify.ErrEventOverflow) {
		w.report(fmt.Errorf("watching %s: %w", w.root, err))
		return
	}
	// Events were lost, possibly including new directories: re-add every
	// watch and let the consumer treat everything as changed.
	w.report(fmt.Errorf("inotify event queue overflowed while watching %s: rebuilding everything (raise fs.inotify.max_queued_events if this repeats)", w.root))
	w.rescan = true
	w.queueWalk(job{dir: ".", rescan: true})
	w.activity()
}

func (w *Watcher) queueWalk(j job) {
	w.walking[j.dir]++
	w.jobs.push(j)
}

// dropDir handles the removal or renaming away of rel, if it is a watched
// directory: every input known inside it becomes a pending change (and so a
// removal), and walk drops the watches, whose paths inotify can no longer
// keep right.
func (w *Watcher) dropDir(rel string) {
	if _, ok := w.tree[rel]; !ok && w.walking[rel] == 0 {
		return
	}
	if rel == "." {
		w.report(fmt.Errorf("watching %s: the directory was removed or moved away; start kwatch again on its new path", w.root))
	}
	for dir, files := range w.tree {
		if !within(dir, rel) {
			continue
		}
		for name := range files {
			w.pending[path.Join(dir, name)] = change{content: true}
		}
		delete(w.tree, dir)
	}
	if len(w.pending) > 0 {
		w.activity()
	}
	w.jobs.push(job{dir: rel, unwatch: true})
}

// merge takes the result of a walk.
func (w *Watcher) merge(s scan) {
	if w.walking[s.job.dir]--; w.walking[s.job.dir] <= 0 {
		delete(w.walking, s.job.dir)
	}
	if s.job.rescan {
		w.tree = s.tree
	} else {
		for dir, files := range s.tree {
			w.tree.addDir(dir)
			for name := range files {
				w.tree.addFile(path.Join(dir, name))
				w.pending[path.Join(dir, name)] = change{content: true}
			}
		}
	}
	if w.open || len(w.pending) > 0 {
		w.activity()
	}
}

// closeBatch classifies the pending paths by their state now and moves them to the outbox.
func (w *Watcher) closeBatch() {
	w.open = false
	w.closedAt = time.Now()
	w.quiet.Stop()
	w.deadline.Stop()
	for rel, c := range w.pending {
		fi, err := os.Lstat(filepath.Join(w.root, rel))
		switch {
		case err == nil && !fi.IsDir():
			// A bare attribute change after the save was reported (vim
			// sets the mode after closing) is not a new change.
			touched := !fi.ModTime().Before(c.attribAt.Add(-touchWindow)) && !fi.ModTime().Equal(w.sent[rel])
			if c.content || touched {
				w.outbox[rel] = true
				w.sent[rel] = fi.ModTime()
				w.tree.addFile(rel)
			}
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
			w.outbox[rel] = false
			delete(w.sent, rel)
			w.tree.removeFile(rel)
		}
	}
	clear(w.pending)
	w.outRes = w.outRes || w.rescan
	w.rescan = false
}

func (w *Watcher) outboxBatch() Batch {
	b := Batch{Rescan: w.outRes}
	for rel, exists := range w.outbox {
		if exists {
			b.Changed = append(b.Changed, rel)
		} else {
			b.Removed = append(b.Removed, rel)
		}
	}
	slices.Sort(b.Changed)
	slices.Sort(b.Removed)
	return b
}

// rel turns an event path into a slash-separated path relative to the root.
func (w *Watcher) rel(name string) (string, bool) {
	rel, err := filepath.Rel(w.root, name)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// within reports whether rel is dir or below it.
func within(rel, dir string) bool {
	return dir == "." || rel == dir || strings.HasPrefix(rel, dir+"/")
}

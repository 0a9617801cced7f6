package watcher

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// tree maps each watched directory (relative to the root, "." for the root)
// to the input file names known inside it. It lets a removed or renamed
// directory be reported as the removal of the inputs it held.
type tree map[string]map[string]struct{}

func (t tree) addDir(dir string) {
	if t[dir] == nil {
		t[dir] = map[string]struct{}{}
	}
}

// addFile records rel if its directory is watched.
func (t tree) addFile(rel string) {
	if files := t[path.Dir(rel)]; files != nil {
		files[path.Base(rel)] = struct{}{}
	}
}

func (t tree) removeFile(rel string) {
	delete(t[path.Dir(rel)], path.Base(rel))
}

// job is work for the walk goroutine.
type job struct {
	dir     string // relative to the root
	unwatch bool   // drop the watches on dir and below: it was removed or renamed away
	rescan  bool   // a walk of the root after a queue overflow: it replaces the tree and reports nothing
}

// scan is the result of a walk job.
type scan struct {
	job  job
	tree tree
}

// jobQueue is an unbounded FIFO, so that run can hand work to walk without
// ever waiting. Order matters: the watches of a directory renamed away must
// be dropped before its new name is walked.
type jobQueue struct {
	mu   sync.Mutex
	jobs []job
	wake chan struct{} // capacity 1: "the queue is not empty"
}

func (q *jobQueue) push(j job) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *jobQueue) pop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.jobs) == 0 {
		return job{}, false
	}
	j := q.jobs[0]
	q.jobs = q.jobs[1:]
	return j, true
}

// walk does the slow part of watching: adding watches and walking new directories.
func (w *Watcher) walk() {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		case <-w.jobs.wake:
		}
		for j, ok := w.jobs.pop(); ok; j, ok = w.jobs.pop() {
			if j.unwatch {
				w.unwatch(j.dir)
				continue
			}
			t, err := w.watchTree(j.dir)
			if err != nil && !errors.Is(err, fsnotify.ErrClosed) {
				w.report(err)
			}
			select {
			case w.results <- scan{job: j, tree: t}:
			case <-w.stop:
				return
			}
		}
	}
}

// unwatch removes the watches on dir and everything below it. fsnotify's own
// list is used because it also holds directories whose walk had not reported
// back yet. Errors are expected and ignored: inotify drops the watch of a
// deleted directory by itself.
func (w *Watcher) unwatch(dir string) {
	abs := filepath.Join(w.root, dir)
	for _, p := range w.fsw.WatchList() {
		if p == abs || strings.HasPrefix(p, abs+"/") {
			_ = w.fsw.Remove(p)
		}
	}
	w.closes.removeUnder(abs)
}

// watchTree adds a watch for dir and every directory below it that is not
// ignored, and returns them with the inputs found inside. Each directory is
// watched before it is read, so a file created meanwhile is either listed or
// produces an event. Problems with single entries go to Errors; an exhausted
// inotify limit, or failing to watch dir itself, ends the walk with an error.
func (w *Watcher) watchTree(dir string) (tree, error) {
	t := tree{}
	err := filepath.WalkDir(filepath.Join(w.root, dir), func(p string, d fs.DirEntry, err error) error {
		rel, _ := w.rel(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // vanished while walking: nothing to do
				w.report(fmt.Errorf("watching %s: %w", p, err))
			}
			return nil
		}
		if !d.IsDir() { // includes symlinks, which are never followed
			if w.rules.relevant(rel) {
				t.addFile(rel)
			}
			return nil
		}
		if rel != dir && w.rules.excluded(rel, true) {
			return filepath.SkipDir
		}
		if err := w.addWatch(p); err != nil {
			switch {
			case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
				return filepath.SkipDir
			case rel == dir || errors.Is(err, fsnotify.ErrClosed) || errors.Is(err, unix.ENOSPC):
				return explainLimit(p, err)
			}
			w.report(fmt.Errorf("watching %s: %w", p, err))
			return filepath.SkipDir
		}
		t.addDir(rel)
		return nil
	})
	return t, err
}

// addWatch watches dir with fsnotify and for completed saves.
func (w *Watcher) addWatch(dir string) error {
	if err := w.fsw.Add(dir); err != nil {
		return err
	}
	return w.closes.add(dir)
}

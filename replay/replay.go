package replay

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"kwatch/makelog"
)

// A Replay runs again what make ran for the targets of the module that are
// out of date, and for what is downstream of them: each target's recorded
// lines with /bin/sh and that line's flags, in its dir and environment,
// when make would remake it (it is missing, or a prerequisite is newer);
// the sub-makes' targets in the order make ran them, a target once the
// ones it depends on are done. A Replay runs once.
type Replay struct {
	g     *Graph
	steps map[string]*step // by target

	mu      sync.Mutex
	late    []lateRecord // record writes left for Finish
	ran     []*step      // the steps that ran, in order
	streams bool         // a step writes to out directly
	checks  []*checkRun  // lines running alongside the build (see do)
}

// A checkRun is a line that runs alongside the rest of the build.
type checkRun struct {
	s      *step
	l      makelog.Line
	before time.Time // its target's mtime before the target's lines ran
	watch  Stamps    // the files it could write (its output, its target) as it started
	out    bytes.Buffer
	err    error
	done   chan struct{}
}

// step is one target's recipe as the replay runs it.
type step struct {
	r        *recipe
	o        *Object
	now      []makelog.Line // the lines to run
	late     []makelog.Line // the last ones, which only write the record: for Finish
	depfiles []string       // the files the late lines remove (the compiler's dependency list)

	writable     map[string]bool // the files its lines may write, made once by mayWrite
	writableOnce sync.Once
	ended        time.Time // when do ended; guarded by the Replay's mu
}

// lateRecord is a line that only writes o's record, run by Finish.
type lateRecord struct {
	o    *Object
	line makelog.Line
}

// Replay returns the replay of the module, or an error (ErrSelfCheck) if a
// record no longer holds the command make ran for its target: then make
// ran otherwise since (another make, other flags), and the caller runs
// Kbuild's per-module makes instead.
func (g *Graph) Replay() (*Replay, error) {
	p := &Replay{g: g, steps: map[string]*step{}}
	for _, t := range g.rec.order {
		r := g.rec.recipes[t]
		o := g.Objects[t]
		if o == nil {
			return nil, fallbackf(ErrSelfCheck, "make ran lines for %s, which has no Kbuild record", g.rel(t))
		}
		cmd, err := unescape(o.raw)
		if err != nil {
			return nil, fallbackf(ErrSelfCheck, "the record of %s: %v", g.rel(t), err)
		}
		cmd = strings.TrimSpace(cmd)
		if !slices.ContainsFunc(r.lines, func(l makelog.Line) bool { return strings.Contains(l.Text, cmd) }) {
			return nil, fallbackf(ErrSelfCheck, "the record of %s differs from the command make ran", g.rel(t))
		}
		p.steps[t] = deferRecord(r, o, g.rec.check)
	}
	return p, nil
}

// deferRecord prepares a target's lines: when their last commands only
// write the target's record (a redirect into .NAME.cmd, or the removal of
// one file) and no other line touches the record, those commands wait for
// Finish. fixdep is most of such lines: it scans every file the compiler's
// dependency list names (for Rust, tens of MB of .rmeta). A later line may
// still name the record as its output if it is a check (see Replay.do),
// such as genksyms' test for exports, which appends symbol CRCs to the
// record: a check that writes fails the replay, and make redoes the target.
func deferRecord(r *recipe, o *Object, check func(makelog.Line) bool) *step {
	s := &step{r: r, o: o, now: r.lines}
	name := filepath.Base(o.file)
	deferring := false
	var now, late []makelog.Line
	var depfiles []string
	for _, l := range r.lines {
		head, tail, removes := recordTail(l.Text, l.Dir, o.file)
		if tail == "" {
			if deferring && strings.Contains(l.Text, name) && !(check(l) && namesOnlyAsOutput(l.Text, l.Dir, o.file)) {
				return s // a later line reads or appends to the record
			}
			now = append(now, l)
			continue
		}
		if strings.Contains(head, name) {
			return s
		}
		deferring = true
		late = append(late, withText(l, "set -e; "+tail))
		depfiles = append(depfiles, removes...)
		if !noop(head) {
			now = append(now, withText(l, head))
		}
	}
	s.now, s.late, s.depfiles = now, late, depfiles
	return s
}

func withText(l makelog.Line, text string) makelog.Line {
	l.Text = text
	return l
}

// Run rebuilds what the change requires and stops at the first target that
// fails. run runs one command (the caller stops it when ctx ends); jobs is
// make's -j. A target that is out of date but that make has not run since
// kwatch started is an error (ErrNotLearned): the full make must run.
func (p *Replay) Run(ctx context.Context, out io.Writer, run func(*exec.Cmd) error, jobs int) (err error) {
	out = &syncWriter{w: out}
	// However it ends, the checks that started are waited for and count.
	defer func() { err = errors.Join(err, p.waitChecks(out)) }()
	for i, phase := range p.g.rec.byPhase() {
		if err := p.unlearned(); err != nil {
			return err
		}
		// modpost, in a later sub-make, hashes for a srcversion the local
		// files the records of the objects name: they must be this build's.
		// The checks end first: the records are among what they may write.
		if i > 0 && p.pendingRecords() && p.srcversion() && !p.sameLocalDeps() {
			if err := p.waitChecks(out); err != nil {
				return err
			}
			if err := p.Finish(out, run); err != nil {
				return err
			}
		}
		if err := p.runPhase(ctx, phase, out, run, jobs); err != nil {
			return err
		}
	}
	return p.unlearned()
}

// syncWriter serializes writes: the step whose output streams and the
// others, which write theirs whole, share the build's output.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// waitChecks waits for the lines running alongside the build and returns
// the first that failed or wrote a file; each such one's target is removed,
// as make would have for a failure.
func (p *Replay) waitChecks(out io.Writer) error {
	p.mu.Lock()
	checks := p.checks
	p.checks = nil
	p.mu.Unlock()
	var first error
	for _, c := range checks {
		<-c.done
		out.Write(c.out.Bytes())
		if c.err == nil && c.wrote() {
			// What ran after it may have read what it wrote too late: make
			// redoes the target, and the line is watched again.
			p.g.rec.unsetCheck(c.l)
			c.err = fallbackf(ErrCheckWrote, "a line of %s wrote a file (it wrote none in earlier builds)", p.g.rel(c.s.r.target))
		}
		if c.err == nil {
			continue
		}
		if first == nil {
			first = c.err
		}
		if after := modTime(c.s.r.target); !after.IsZero() && !after.Equal(c.before) {
			os.Remove(c.s.r.target)
		}
	}
	return first
}

// unlearned returns ErrNotLearned for a recorded object that is out of date
// and whose lines make has not run while kwatch watched.
func (p *Replay) unlearned() error {
	for t, o := range p.g.Objects {
		if p.steps[t] == nil && o.Source != "" && p.outdated(t, append([]string{o.Source}, o.Deps...), o) {
			return fallbackf(ErrNotLearned, "%s is out of date and make has not built it since kwatch started", p.g.rel(t))
		}
	}
	return nil
}

// runPhase runs one sub-make's targets: each waits for those it depends on
// that come before it, then runs if it is out of date, jobs at a time.
// Like make, it starts none after a failure, and returns the first once
// all that started ended.
func (p *Replay) runPhase(ctx context.Context, phase []*recipe, out io.Writer, run func(*exec.Cmd) error, jobs int) error {
	done := map[string]chan struct{}{}
	for _, r := range phase {
		done[r.target] = make(chan struct{})
	}
	sem := make(chan struct{}, max(jobs, 1))
	var mu sync.Mutex
	var first error
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	var wg sync.WaitGroup
	for i, r := range phase {
		s := p.steps[r.target]
		prereqs := s.prereqs()
		var before []chan struct{}
		for _, q := range phase[:i] {
			if slices.Contains(prereqs, q.target) {
				before = append(before, done[q.target])
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[r.target])
			for _, c := range before {
				<-c
			}
			if failed() || !p.outdated(r.target, prereqs, s.o) {
				return
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			if failed() {
				return
			}
			err := p.do(ctx, s, out, run)
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return first
}

// prereqs are what make named as the target's prerequisites and what its
// record names (a header included since).
func (s *step) prereqs() []string {
	out := slices.Clone(s.r.prereqs)
	if s.o.Source != "" {
		out = append(out, s.o.Source)
	}
	return append(out, s.o.Deps...)
}

// outdated reports whether make would remake the target: it is missing, or
// a prerequisite is newer, or missing and one make remakes. A missing one
// make does not remake is a phony one (FORCE), or one named through
// $(wildcard).
func (p *Replay) outdated(target string, prereqs []string, o *Object) bool {
	t, err := os.Stat(target)
	if err != nil {
		return true
	}
	for _, q := range prereqs {
		fi, err := os.Stat(q)
		if err != nil {
			if p.g.rec.recipes[q] != nil && !o.wild[q] {
				return true
			}
			continue
		}
		if fi.ModTime().After(t.ModTime()) {
			return true
		}
	}
	return false
}

// do runs one target's lines; when a line fails it removes the target if
// the lines changed it, as Kbuild's .DELETE_ON_ERROR has make do, so that
// the next build remakes it. The first target to start writes its output
// as it comes; the others write theirs whole when they end.
func (p *Replay) do(ctx context.Context, s *step, out io.Writer, run func(*exec.Cmd) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	stream := !p.streams
	p.streams = true
	p.ran = append(p.ran, s)
	p.mu.Unlock()
	w := out
	var buf bytes.Buffer
	if !stream {
		w = &buf
	}
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		s.ended = time.Now()
		if stream {
			p.streams = false
		} else {
			out.Write(buf.Bytes())
		}
	}()
	before := modTime(s.r.target)
	for i, l := range s.now {
		// A line after the first that replays saw change no file of the
		// module dir twice (a check, such as Linux 6.1's check-local-export,
		// or genksyms' test for exports while a module has none) runs
		// alongside the rest; Run waits for it, and fails if it fails or
		// writes.
		if i > 0 && p.g.rec.check(l) {
			p.alongside(s, l, before, run)
			continue
		}
		// Only a line whose output goes to files in the module dir can be
		// seen to write nothing.
		files, plain := outputs(l.Text, l.Dir)
		observe := i > 0 && plain && !slices.ContainsFunc(files, func(f string) bool { return !p.g.inDir(f) })
		var pre map[string]stamp
		var since time.Time
		if observe {
			since, pre = time.Now(), observed(p.g.Dir, files)
		}
		if err := run(shell(l, w)); err != nil {
			if after := modTime(s.r.target); !after.IsZero() && !after.Equal(before) {
				os.Remove(s.r.target)
			}
			return err
		}
		if observe {
			post := observed(p.g.Dir, files)
			if wroteNothing(s, files, pre, post, p.meanwhile(s, since)) {
				p.g.rec.setCheck(l)
			}
		}
	}
	p.mu.Lock()
	for _, l := range s.late {
		p.late = append(p.late, lateRecord{o: s.o, line: l})
	}
	p.mu.Unlock()
	return nil
}

// wrote reports whether a file the check could write changed: its target
// or a file it redirects into. A check that wrote another file of the
// module dir this time is not seen (what the build's other lines write
// changes there meanwhile); learning a check watches the whole dir but
// for what other steps write (see wroteNothing).
func (c *checkRun) wrote() bool {
	for f, st := range c.watch {
		if stampOf(f) != st {
			return true
		}
	}
	return false
}

// alongside starts a check line of s; Run waits for it.
func (p *Replay) alongside(s *step, l makelog.Line, before time.Time, run func(*exec.Cmd) error) {
	c := &checkRun{s: s, l: l, before: before, done: make(chan struct{}), watch: Stamps{}}
	files, _ := outputs(l.Text, l.Dir)
	for _, f := range append(files, s.r.target) {
		c.watch[f] = stampOf(f)
	}
	cmd := shell(l, &c.out)
	p.mu.Lock()
	p.checks = append(p.checks, c)
	p.mu.Unlock()
	go func() {
		defer close(c.done)
		c.err = run(cmd)
	}()
}

// meanwhile returns the steps other than s that ran at some time since:
// started by now, and not ended before since.
func (p *Replay) meanwhile(s *step, since time.Time) []*step {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*step
	for _, o := range p.ran {
		if o != s && (o.ended.IsZero() || !o.ended.Before(since)) {
			out = append(out, o)
		}
	}
	return out
}

// wroteNothing reports whether a line of s, which redirects into own,
// changed no file of the module dir between the stamps pre and post. A
// file that one of others (the steps that ran meanwhile) may write counts
// as that step's, not the line's: the compile of another object writes
// that object and its dependency list meanwhile. The line's target and own
// always count. A line that wrote a file another step writes too is not
// seen.
func wroteNothing(s *step, own []string, pre, post map[string]stamp, others []*step) bool {
	changed := func(f string) bool {
		return f == s.r.target || slices.Contains(own, f) ||
			!slices.ContainsFunc(others, func(o *step) bool { return o.mayWrite()[f] })
	}
	for f, st := range pre {
		if post[f] != st && changed(f) {
			return false
		}
	}
	for f := range post {
		if _, ok := pre[f]; !ok && changed(f) { // created
			return false
		}
	}
	return true
}

// mayWrite returns the files the step's lines name and do not read (its
// prereqs): each word, and each part of a word between commas or
// after "=" (-Wp,-MMD,DEPFILE), resolved against the line's dir. A path
// with a comma in such a word, or in a line that cannot be read plainly,
// is not among them.
func (s *step) mayWrite() map[string]bool {
	s.writableOnce.Do(func() {
		s.writable = map[string]bool{}
		for _, l := range s.now {
			segs, _ := segments(l.Text)
			for _, seg := range segs {
				for _, w := range seg.words {
					s.writable[resolve(l.Dir, w)] = true
					if _, after, ok := strings.Cut(w, "="); ok {
						w = after
					}
					for _, part := range strings.Split(w, ",") {
						if part != "" {
							s.writable[resolve(l.Dir, part)] = true
						}
					}
				}
			}
		}
		for _, f := range s.prereqs() {
			delete(s.writable, f)
		}
	})
	return s.writable
}

// observed stamps what a line may change: every file under dir (outside
// dot-directories) and the files it redirects into (in one, say).
func observed(dir string, outputs []string) map[string]stamp {
	stamps := map[string]stamp{}
	WalkFiles(dir, func(path string, fi fs.FileInfo) { stamps[path] = stamp{fi.ModTime(), fi.Size()} })
	for _, f := range outputs {
		stamps[f] = stampOf(f)
	}
	return stamps
}

// shell is a recorded line as make runs it, with output to out.
func shell(l makelog.Line, out io.Writer) *exec.Cmd {
	c := exec.Command("/bin/sh", append(slices.Clone(l.Flags), l.Text)...)
	c.Dir, c.Env = l.Dir, withoutRunFlags(l.Env)
	c.Stdout, c.Stderr = out, out
	return c
}

// Finish writes the records Run left for later, so that Kbuild's state is
// what make leaves. Call it once Run ended, also when the build is over: a
// target whose record failed is removed, so that the next build remakes it.
func (p *Replay) Finish(out io.Writer, run func(*exec.Cmd) error) error {
	p.mu.Lock()
	late := p.late
	p.late = nil
	p.mu.Unlock()
	var errs []error
	for _, r := range late {
		if err := run(shell(r.line, out)); err != nil {
			os.Remove(r.o.Target)
			errs = append(errs, fmt.Errorf("writing the record of %s: %w", r.o.key, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Replay) pendingRecords() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.late) > 0
}

// srcversion reports whether modpost may compute a srcversion (sumversion.c)
// here: with CONFIG_MODULE_SRCVERSION_ALL, or for a module with
// MODULE_VERSION, which a recorded source (its last .mod.c) shows or an
// object made now declares.
func (p *Replay) srcversion() bool {
	if conf, err := os.ReadFile(filepath.Join(p.g.rec.topDir(), "include/config/auto.conf")); err != nil ||
		bytes.Contains(conf, []byte("\nCONFIG_MODULE_SRCVERSION_ALL=y\n")) {
		return true
	}
	for _, o := range p.g.Objects {
		if b, _ := os.ReadFile(o.Source); bytes.Contains(b, []byte("MODULE_INFO(srcversion,")) {
			return true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.ran {
		if len(s.late) > 0 && s.o.Source != "" && declaresVersion(s.r.target) {
			return true
		}
	}
	return false
}

// sameLocalDeps reports whether each object compiled now whose record is
// still to be written depends on the same files in its own directory, in
// the same order, as its record says (the files modpost hashes for a
// srcversion): then that record may wait. The new list is the first rule of
// the compiler's dependency file (which the late lines remove), which
// fixdep has not read yet; one that cannot be read plainly, or a path not
// in its plain form (sumversion.c matches the text), means no.
func (p *Replay) sameLocalDeps() bool {
	p.mu.Lock()
	pending := map[*Object]bool{}
	for _, l := range p.late {
		pending[l.o] = true
	}
	ran := slices.Clone(p.ran)
	p.mu.Unlock()
	for _, s := range ran {
		o := s.o
		if !pending[o] || o.Source == "" {
			continue // its record is this build's already, or it is no compiled object (a link, modules.order)
		}
		if len(s.depfiles) != 1 || !filepath.IsAbs(o.key) {
			return false // no dependency list; or relative paths, which may be local
		}
		b, err := os.ReadFile(s.depfiles[0])
		if err != nil {
			return false
		}
		rule, _, _ := strings.Cut(strings.ReplaceAll(string(b), "\\\n", " "), "\n")
		_, list, ok := strings.Cut(rule, ": ")
		if !ok || strings.Contains(list, "\\") {
			return false
		}
		var now []string
		for _, f := range strings.Fields(list) {
			switch {
			case !filepath.IsAbs(f): // in the kernel tree
			case filepath.Clean(f) != f:
				return false
			default:
				now = append(now, f)
			}
		}
		dir := filepath.Dir(o.Target)
		local := func(paths []string) []string {
			return slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return filepath.Dir(p) != dir })
		}
		if !slices.Equal(local(now), local(append([]string{o.Source}, o.Deps...))) {
			return false
		}
	}
	return true
}

// declaresVersion reports whether the object's .modinfo has a version
// (MODULE_VERSION).
func declaresVersion(obj string) bool {
	f, err := elf.Open(obj)
	if err != nil {
		return true // unknown: assume so, which only costs time
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return false
	}
	b, err := sec.Data()
	return err != nil || bytes.HasPrefix(b, []byte("version=")) || bytes.Contains(b, []byte("\x00version="))
}

// unescape undoes Kbuild's make-cmd, which recorded the command with "$"
// doubled and "#" written $(pound): it returns the command make runs.
func unescape(raw string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] != '$' {
			b.WriteByte(raw[i])
			continue
		}
		switch {
		case strings.HasPrefix(raw[i:], "$$"):
			b.WriteByte('$')
			i++
		case strings.HasPrefix(raw[i:], "$(pound)"):
			b.WriteByte('#')
			i += len("$(pound)") - 1
		default:
			return "", fmt.Errorf("the recorded command has a make reference at %q", raw[i:min(len(raw), i+20)])
		}
	}
	return b.String(), nil
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

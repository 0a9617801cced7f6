package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"kwatch/kmod"
	"kwatch/makelog"
	"kwatch/proc"
	"kwatch/replay"
)

// Make runs `make Args...` in Dir with Env (nil = os.Environ()) and returns the
// module named by Dir/modules.order. It is the core of the Kbuild builder and of
// nix's incremental builder, so it knows nothing about either.
//
// The full make runs with kwatch as make's SHELL (package makelog), so it
// learns every line make ran; with what Kbuild recorded (package replay) it
// rebuilds the next change that those records cover without the full
// make, by running those lines again: the fast path. A Make must not be
// copied once used.
type Make struct {
	Dir  string
	Args []string
	Env  []string
	// EditorFiles writes compile_commands.json (C) or, through Kbuild's
	// rust-analyzer target, rust-project.json (Rust) into Dir after each full make.
	EditorFiles bool
	// EditorRecord is a file in kwatch's state dir that remembers which
	// editor files kwatch wrote, so that it never overwrites one it did not
	// write; "" remembers them for this run only.
	EditorRecord string
	// Module is the module to load when obj-m names several (its file name
	// without .ko); "" is the first one in modules.order.
	Module string
	// KDir is the kernel build dir (make -C KDIR); "" when unknown.
	KDir string

	mu       sync.Mutex
	rec      *replay.Recording // what the full makes ran, learned (package makelog)
	graph    *replay.Graph     // the last good build's records; nil: the next build runs the full make
	why      error             // why graph is nil, for the next build's Result.Fallback
	noFast   bool              // the full make once disagreed with the fast path
	lastKO   string            // the last good build's module
	lastFast bool              // whether the fast path built it
	net      *netRun           // the correctness net's check (BeginVerify)
	settled  chan struct{}     // closed once the last build's records are written and read

	owned     map[string]string // editor files kwatch wrote: path -> content hash
	leftAlone map[string]bool   // editor files kwatch said it leaves alone
}

// ErrSourcesChanged means a source file changed while make ran; what the
// build wrote was removed, and the sources should be built again.
var ErrSourcesChanged = errors.New("sources changed during the build")

// ErrFastPathOff is why every build after a Mismatch runs the full make.
var ErrFastPathOff = errors.New("the fast path is off: the correctness net found it wrong")

// removeOutputsSince removes the objects and modules under dir that a build
// wrote at or after t (one written just before costs only a recompile). Only
// files Kbuild keeps a record of (.NAME.cmd next to NAME) count as the
// build's: an object the user put there stays.
func removeOutputsSince(dir string, t time.Time) error {
	var errs []error
	replay.WalkFiles(dir, func(path string, fi fs.FileInfo) {
		ext := filepath.Ext(path)
		if (ext != ".o" && ext != ".ko") || fi.ModTime().Before(t) {
			return
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".cmd")); err != nil {
			return
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// withoutMakeVars drops the variables an outer make (`make demo`, `make
// test`) passes down: its jobserver and level would leak into the module
// build and change how make behaves and words its errors.
func withoutMakeVars(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name != "MAKEFLAGS" && name != "MAKELEVEL" && name != "MFLAGS" {
			out = append(out, kv)
		}
	}
	return out
}

// Build rebuilds the module in place: through the fast path when Kbuild's
// records cover every change since the last good build, else with the full
// make, whose own dependency tracking makes it incremental.
func (m *Make) Build(ctx context.Context, out io.Writer) (Result, error) {
	dir, err := filepath.Abs(m.Dir)
	if err != nil {
		return Result{}, fmt.Errorf("resolving build dir %s: %w", m.Dir, err)
	}
	if out == nil {
		out = io.Discard
	}
	m.Settle()
	m.StopVerify() // the build dir is this build's now
	m.mu.Lock()
	last := m.graph
	m.mu.Unlock()
	// Every file the last build's records name counts, wherever it is: a
	// header in ../inc changed while the compiler ran is one the module may
	// not have seen.
	before := replay.InputStamps(dir, last)
	g, rp, steps, why := m.fastPath(before)

	s := newScanner(dir, out, argValue(m.Args, "RUSTC=", "rustc"), argValue(m.Args, "-C", "the kernel build dir"))
	// Files are stamped by a coarse clock that may lag behind time.Now.
	start := time.Now().Add(-20 * time.Millisecond)
	res := Result{Path: PathKbuild, Fallback: why}
	var lines []makelog.Line
	switch {
	case rp != nil:
		res.Path, res.Via = PathFast, ViaDirect
		err = runReplay(ctx, rp, s)
		if errors.Is(err, replay.ErrNotLearned) || errors.Is(err, replay.ErrCheckWrote) {
			// Make redoes what the replay did not (or must redo), and learns it.
			finishReplay(ctx, rp, s)
			rp, g = nil, nil
			res = Result{Path: PathKbuild, Fallback: err}
			lines, err = m.runFull(ctx, dir, s)
		}
	case steps != nil:
		res.Path, res.Via = PathFast, ViaSteps
		err = runSteps(ctx, steps, s)
	default:
		g = nil
		lines, err = m.runFull(ctx, dir, s)
	}
	s.flush()
	changed := !maps.Equal(before, replay.InputStamps(dir, last))
	// A replay leaves the records of what it made for later (see
	// replay.Replay.Finish): a good build hands that on below; any other
	// outcome writes them now, before anything reads them.
	if rp != nil && (changed || err != nil || ctx.Err() != nil) {
		finishReplay(ctx, rp, s)
		rp = nil
	}
	if changed {
		// An object compiled from a source that was rewritten while the
		// compiler ran is newer than that source, so make would keep it:
		// remove what this build wrote so the next one compiles it again.
		m.setGraph(nil, ErrSourcesChanged, "", false)
		if rmErr := removeOutputsSince(dir, start); rmErr != nil {
			return Result{}, fmt.Errorf("removing outputs of a build whose sources changed: %w", rmErr)
		}
		if ctx.Err() == nil {
			return Result{}, ErrSourcesChanged
		}
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		// A full make that failed may have left records half-written; a
		// fast build that failed left them as make would have, so read them
		// again (what failed to read means the full make next time).
		var g2 *replay.Graph
		var readErr error = errLastMakeFailed
		if g != nil {
			g2, readErr = m.read(dir, before, start)
		}
		m.setGraph(g2, readErr, "", false)
		res.KO = ""
		return res, s.failure(err)
	}
	if g == nil {
		m.learn(dir, lines)
	}
	ko, all, err := builtModule(dir, m.Module)
	if err != nil {
		if rp != nil {
			finishReplay(ctx, rp, s)
		}
		return Result{}, err
	}
	res.KO, res.Modules = ko, all
	if m.KDir != "" {
		res.Symvers = filepath.Join(m.KDir, "Module.symvers")
	}
	if rp == nil {
		m.refresh(ctx, dir, g == nil, before, start, res, out)
		return res, nil
	}
	// The module is ready: the records the replay left for later are
	// written, and read for the next build, while it is uploaded and loaded.
	settled := make(chan struct{})
	m.mu.Lock()
	m.settled = settled
	m.mu.Unlock()
	go func() {
		defer close(settled)
		if err := finishReplay(ctx, rp, out); err != nil {
			fmt.Fprintf(out, "kwatch: %v\n", err)
			m.setGraph(nil, fmt.Errorf("%w: %v", replay.ErrNoRecords, err), "", false)
			return
		}
		m.refresh(ctx, dir, false, before, start, res, out)
	}()
	return res, nil
}

// errLastMakeFailed is why the build after a failed full make runs the
// full make again.
var errLastMakeFailed = fmt.Errorf("%w: the last full make failed", replay.ErrNoRecords)

// Settle waits until the last build's records are all written and read
// (see replay.Replay.Finish): Kbuild's state is then what make leaves.
func (m *Make) Settle() {
	m.mu.Lock()
	settled := m.settled
	m.mu.Unlock()
	if settled != nil {
		<-settled
	}
}

// builtModule returns the module a successful make built in dir: the one
// named want, or the first in modules.order; all names every module built.
func builtModule(dir, want string) (ko string, all []string, err error) {
	kos, err := replay.ModulesOrder(dir)
	if err != nil {
		return "", nil, fmt.Errorf("finding the built module: %w", err)
	}
	for _, k := range kos {
		all = append(all, strings.TrimSuffix(filepath.Base(k), ".ko"))
	}
	ko = kos[0]
	if want != "" {
		i := slices.IndexFunc(all, func(name string) bool { return kmod.Name(name) == kmod.Name(want) })
		if i < 0 {
			return "", nil, &Error{Err: fmt.Errorf("--module %s: obj-m does not build it (modules.order names %s)", want, strings.Join(all, ", ")),
				Fix: "pass --module with one of: " + strings.Join(all, ", ")}
		}
		ko = kos[i]
	}
	if _, err := os.Stat(ko); err != nil {
		return "", nil, fmt.Errorf("make succeeded but did not produce %s: %w", ko, err)
	}
	return ko, all, nil
}

// runFull runs the full make and returns the lines it ran (package
// makelog): make runs kwatch (os.Executable) as its SHELL for each of them.
func (m *Make) runFull(ctx context.Context, dir string, out io.Writer) ([]makelog.Line, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kwatch-make-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	log := filepath.Join(tmp, "lines")
	if err := os.WriteFile(log, nil, 0o600); err != nil {
		return nil, err
	}
	args := slices.Clone(m.Args)
	arg, argErr := makelog.Arg(exe, log)
	if argErr != nil {
		// The build still runs; only the fast path is lost.
		fmt.Fprintf(out, "kwatch: no fast path: %v\n", argErr)
	} else {
		args = append(args, arg)
	}
	cmd := exec.Command("make", args...)
	cmd.Dir = dir
	cmd.Env = withoutMakeVars(m.Env)
	// One writer for both streams: exec then copies them from a single pipe, in order.
	cmd.Stdout, cmd.Stderr = out, out
	if err := proc.Run(ctx, cmd); err != nil {
		return nil, err
	}
	return makelog.Read(log)
}

// learn adds what a good full make ran to what the Make knows.
func (m *Make) learn(dir string, lines []makelog.Line) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rec = replay.Learn(m.rec, dir, lines)
}

func (m *Make) recording() *replay.Recording {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec
}

// fastPath returns the records of the last good build and how to bring it
// up to date, its inputs being now: by replaying what make ran, else
// through the per-module makes; or why the full make must run (nil: there
// was no build yet).
func (m *Make) fastPath(now replay.Stamps) (g *replay.Graph, rp *replay.Replay, steps []*exec.Cmd, why error) {
	m.mu.Lock()
	g, why = m.graph, m.why
	off := m.noFast
	m.mu.Unlock()
	switch {
	case off:
		return nil, nil, nil, ErrFastPathOff
	case g == nil:
		return nil, nil, nil, why
	}
	if why = g.Check(now); why != nil {
		return nil, nil, nil, why
	}
	if g, why = g.Reread(); why != nil {
		return nil, nil, nil, why
	}
	if rp, why = g.Replay(); why != nil {
		if steps = g.Steps(); len(steps) == 0 {
			return nil, nil, nil, why
		}
		return g, nil, steps, why
	}
	return g, rp, nil, nil
}

// runReplay runs the replay in one process group.
func runReplay(ctx context.Context, rp *replay.Replay, out io.Writer) error {
	grp, err := startGroup(ctx)
	if err != nil {
		return err
	}
	defer grp.stop()
	return rp.Run(ctx, out, grp.run, runtime.NumCPU())
}

// finishReplay writes the records a replay left for later, in a process
// group of its own: the build's context may be over already, and the
// records are short work that must not be cut off halfway.
func finishReplay(ctx context.Context, rp *replay.Replay, out io.Writer) error {
	grp, err := startGroup(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer grp.stop()
	return rp.Finish(out, grp.run)
}

// runSteps runs the per-module makes, stopping at the first that fails.
func runSteps(ctx context.Context, steps []*exec.Cmd, out io.Writer) error {
	grp, err := startGroup(ctx)
	if err != nil {
		return err
	}
	defer grp.stop()
	for _, c := range steps {
		c.Stdout, c.Stderr = out, out
		if err := grp.run(c); err != nil {
			return err
		}
	}
	return nil
}

// refresh reads the records of the good build that just finished, for the
// next build's fast path, and after a full make updates the editor files.
func (m *Make) refresh(ctx context.Context, dir string, full bool, before replay.Stamps, start time.Time, res Result, out io.Writer) {
	g, err := m.read(dir, before, start)
	m.setGraph(g, err, res.KO, res.Path == PathFast)
	if g == nil || !full || !m.EditorFiles {
		return
	}
	if cc := g.CompileCommands(); cc != nil {
		m.updateEditorFile(filepath.Join(dir, "compile_commands.json"), out, func() ([]byte, error) { return cc, nil })
	}
	if g.HasRust() {
		m.updateEditorFile(filepath.Join(dir, "rust-project.json"), out, func() ([]byte, error) { return rustProject(ctx, g, out) })
	}
}

// read reads the records of a build that started at start and whose
// inputs were before as it ran (see replay.Graph.AsOf).
func (m *Make) read(dir string, before replay.Stamps, start time.Time) (*replay.Graph, error) {
	g, err := replay.Read(dir, m.recording())
	if g != nil {
		g.AsOf(before, start)
	}
	return g, err
}

// setGraph keeps the records for the next build, or why there are none.
func (m *Make) setGraph(g *replay.Graph, why error, ko string, fast bool) {
	m.mu.Lock()
	m.graph, m.lastKO, m.lastFast = g, ko, fast
	m.why = nil
	if g == nil {
		m.why = why
	}
	m.mu.Unlock()
}

// argValue returns the value of a make argument given as "NAME=value" (or
// "-Cdir" / "-C dir" for flags), or def if args do not set it.
func argValue(args []string, name, def string) string {
	val := def
	for i, a := range args {
		switch {
		case a == name && strings.HasPrefix(name, "-") && i+1 < len(args):
			val = args[i+1]
		case strings.HasPrefix(a, name) && len(a) > len(name):
			val = a[len(name):]
		}
	}
	return val
}

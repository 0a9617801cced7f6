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

	"kwatch/proc"
	"kwatch/replay"
)

// Make runs `make Args...` in Dir with Env (nil = os.Environ()) and returns the
// module named by Dir/modules.order. It is the core of the Kbuild builder and of
// nix's incremental builder, so it knows nothing about either.
//
// After a full make it keeps what Kbuild recorded (package replay), and
// rebuilds the next change that those records cover without the full make:
// the fast path. A Make must not be copied once used.
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
	graph    *replay.Graph // the last good build's records; nil: the next build runs the full make
	noFast   bool          // the full make once disagreed with the fast path
	lastKO   string        // the last good build's module
	lastFast bool          // whether the fast path built it
	net      *netRun       // the correctness net's check (BeginVerify)
	settled  chan struct{} // closed once the last build's records are written and read

	owned     map[string]string // editor files kwatch wrote: path -> content hash
	leftAlone map[string]bool   // editor files kwatch said it leaves alone
}

// ErrSourcesChanged means a source file changed while make ran; what the
// build wrote was removed, and the sources should be built again.
var ErrSourcesChanged = errors.New("sources changed during the build")

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
	last, off := m.graph, m.noFast
	m.mu.Unlock()
	// Every file the last build's records name counts, wherever it is: a
	// header in ../inc changed while the compiler ran is one the module may
	// not have seen.
	before := replay.InputStamps(dir, last)
	var g *replay.Graph
	var direct *replay.Direct
	var steps []*exec.Cmd
	if last != nil && !off {
		g, direct, steps = fastPath(last, before, out)
	}

	s := newScanner(dir, out, argValue(m.Args, "RUSTC=", "rustc"), argValue(m.Args, "-C", "the kernel build dir"))
	// Files are stamped by a coarse clock that may lag behind time.Now.
	start := time.Now().Add(-20 * time.Millisecond)
	var env []string
	via := ""
	switch {
	case direct != nil:
		via, env = ViaDirect, g.Env
		err = runDirect(ctx, direct, s)
	case g != nil:
		via, env = ViaSteps, g.Env
		err = runSteps(ctx, steps, s)
	default:
		env, err = m.runFull(ctx, dir, s)
	}
	s.flush()
	changed := !maps.Equal(before, replay.InputStamps(dir, last))
	// A direct build leaves the records of what it made for later (see
	// replay.Direct.Finish): a good build hands that on below; any other
	// outcome writes them now, before anything reads them.
	if direct != nil && (changed || err != nil || ctx.Err() != nil) {
		finishDirect(ctx, direct, s)
		direct = nil
	}
	if changed {
		// An object compiled from a source that was rewritten while the
		// compiler ran is newer than that source, so make would keep it:
		// remove what this build wrote so the next one compiles it again.
		m.setGraph(nil, "", false)
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
		if g != nil {
			g2, _ = replay.Read(dir, g.Env)
		}
		m.setGraph(g2, "", false)
		return Result{}, s.failure(err)
	}
	ko, all, err := builtModule(dir, m.Module)
	if err != nil {
		if direct != nil {
			finishDirect(ctx, direct, s)
		}
		return Result{}, err
	}
	res := Result{KO: ko, Modules: all, Path: PathKbuild}
	if m.KDir != "" {
		res.Symvers = filepath.Join(m.KDir, "Module.symvers")
	}
	if g != nil {
		res.Path, res.Via = PathFast, via
	}
	if direct == nil {
		m.refresh(ctx, dir, env, g == nil, res, out)
		return res, nil
	}
	// The module is ready: the records Run left for later are written, and
	// read for the next build, while it is uploaded and loaded.
	settled := make(chan struct{})
	m.mu.Lock()
	m.settled = settled
	m.mu.Unlock()
	go func() {
		defer close(settled)
		if err := finishDirect(ctx, direct, out); err != nil {
			fmt.Fprintf(out, "kwatch: %v\n", err)
			m.setGraph(nil, "", false)
			return
		}
		m.refresh(ctx, dir, env, false, res, out)
	}()
	return res, nil
}

// Settle waits until the last build's records are all written and read
// (see replay.Direct.Finish): Kbuild's state is then what make leaves.
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
		i := slices.IndexFunc(all, func(name string) bool { return sameModule(name, want) })
		if i < 0 {
			return "", nil, &Error{Err: fmt.Errorf("--module %s: obj-m does not build it (modules.order names %s)", want, strings.Join(all, ", ")),
				Hint: "pass --module with one of: " + strings.Join(all, ", ")}
		}
		ko = kos[i]
	}
	if _, err := os.Stat(ko); err != nil {
		return "", nil, fmt.Errorf("make succeeded but did not produce %s: %w", ko, err)
	}
	return ko, all, nil
}

// sameModule reports whether two module names are the same module: the
// kernel treats - and _ in them alike.
func sameModule(a, b string) bool {
	return strings.ReplaceAll(a, "-", "_") == strings.ReplaceAll(b, "-", "_")
}

// runFull runs the full make and returns the environment Kbuild's top-level
// make gave its sub-makes (nil if it did not get that far).
func (m *Make) runFull(ctx context.Context, dir string, out io.Writer) ([]string, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	cmd := exec.Command("make", append(append([]string{}, m.Args...), replay.CaptureArgs...)...)
	cmd.Dir = dir
	cmd.Env = withoutMakeVars(m.Env)
	// One writer for both streams: exec then copies them from a single pipe, in order.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{pw} // replay.CaptureFD
	dump := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		dump <- b
	}()
	err = proc.Run(ctx, cmd)
	pw.Close()
	env, envErr := replay.ParseEnv(<-dump)
	if envErr != nil {
		env = nil
	}
	return env, err
}

// fastPath returns the records of the last good build, g, and how to bring
// the build up to date from them, its inputs being now: directly, else
// through Kbuild's per-module steps; the returned graph is nil when the full
// make must run. It says on out why it did not go directly.
func fastPath(g *replay.Graph, now replay.Stamps, out io.Writer) (*replay.Graph, *replay.Direct, []*exec.Cmd) {
	why := g.Check(now)
	steps, err := g.Steps(runtime.NumCPU())
	if err != nil && why == "" {
		why = err.Error()
	}
	if why != "" {
		fmt.Fprintf(out, "kwatch: full make: %s\n", why)
		return nil, nil, nil
	}
	direct, err := g.Direct()
	if err != nil {
		fmt.Fprintf(out, "kwatch: fast path through Kbuild's steps: %v\n", err)
		return g, nil, steps
	}
	return g, direct, nil
}

// runDirect runs the fast path's recorded commands in one process group.
func runDirect(ctx context.Context, d *replay.Direct, out io.Writer) error {
	grp, err := startGroup(ctx)
	if err != nil {
		return err
	}
	defer grp.stop()
	return d.Run(ctx, out, grp.run, runtime.NumCPU())
}

// finishDirect writes the records a direct build left for later, in a
// process group of its own: the build's context may be over already, and
// the records are short work that must not be cut off halfway.
func finishDirect(ctx context.Context, d *replay.Direct, out io.Writer) error {
	grp, err := startGroup(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer grp.stop()
	return d.Finish(out, grp.run)
}

// runSteps runs Kbuild's per-module steps, stopping at the first that fails.
func runSteps(ctx context.Context, steps []*exec.Cmd, out io.Writer) error {
	for _, c := range steps {
		c.Stdout, c.Stderr = out, out
		if err := proc.Run(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// refresh reads the records of the good build that just finished, for the
// next build's fast path, and after a full make updates the editor files.
func (m *Make) refresh(ctx context.Context, dir string, env []string, full bool, res Result, out io.Writer) {
	var g *replay.Graph
	if env != nil {
		var err error
		if g, err = replay.Read(dir, env); err != nil {
			fmt.Fprintf(out, "kwatch: no fast path for the next build: %v\n", err)
		}
	}
	m.setGraph(g, res.KO, res.Path == PathFast)
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

func (m *Make) setGraph(g *replay.Graph, ko string, fast bool) {
	m.mu.Lock()
	m.graph, m.lastKO, m.lastFast = g, ko, fast
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

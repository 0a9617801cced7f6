package loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"kwatch/builder"
	"kwatch/builder/buildertest"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/kmod"
	"kwatch/kmsg"
	"kwatch/watcher"
)

// The fakes below stand in for the guest, the builder and the watcher, so the
// loop's state machine runs in milliseconds. They model what the loop relies
// on: a boot has an id, a kernel log and loaded modules; a restart or a death
// ends the boot and its sessions.

const fakeRelease = "6.1.0-test"

// fakeGuest is a guest with one boot at a time.
type fakeGuest struct {
	managed bool

	mu         sync.Mutex
	boots      int
	boot       *fakeBoot
	running    bool
	restarts   int
	beforeBoot func()

	// What the next reloads do, and what the guest says; tests change them.
	reload     func(b *fakeBoot, name, remote string) (guest.ReloadResult, error)
	taint      uint64
	taintErr   error
	use        guest.ModuleUse
	runOutput  map[string]fakeRun
	uploadErr  error
	kernelMods map[string]bool // the guest kernel's modules that LoadDeps can load
	kunit      bool            // the guest kernel runs modules' KUnit suites
	hang       bool            // after reload, insmod never returns: Reload waits for its ctx

	reloads      []string // every Reload's remote path, in order
	uploads      []string
	uploadedFrom []string // the local files uploaded
	runs         []string
	depLoads     [][]string // every LoadDeps call's arguments, depends then softPre
}

type fakeRun struct {
	out   string
	exit  int
	err   error
	block bool // print out, then run until ctx ends
}

// fakeBoot is one boot of the guest: its kernel log and loaded modules.
type fakeBoot struct {
	id     string
	g      *fakeGuest
	over   chan struct{} // closed when the boot ends
	ended  bool
	log    []kmsg.Record
	newLog chan struct{} // closed and replaced on every record
	loaded map[string]string
}

func newFakeGuest(managed bool) *fakeGuest {
	g := &fakeGuest{managed: managed, runOutput: map[string]fakeRun{}, use: guest.ModuleUse{Refcnt: 0, InitState: "live"}}
	g.reload = func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		_, had := b.loaded[name]
		b.loaded[name] = remote
		b.logf("%s: loaded from %s", name, remote)
		return guest.ReloadResult{Unloaded: had}, nil
	}
	return g
}

// bootLocked starts a new boot; the caller holds mu.
func (g *fakeGuest) bootLocked() {
	if g.boot != nil {
		g.boot.end()
	}
	g.boots++
	g.boot = &fakeBoot{id: fmt.Sprintf("boot-%d", g.boots), g: g, over: make(chan struct{}),
		newLog: make(chan struct{}), loaded: map[string]string{}}
	g.running = true
	g.boot.logf("Linux version %s (boot %d)", fakeRelease, g.boots)
}

// end ends the boot; the caller holds g.mu.
func (b *fakeBoot) end() {
	if !b.ended {
		b.ended = true
		close(b.over)
	}
}

// reboot ends the current boot and starts a new one, as the guest's owner
// does for a VM that died or stopped answering.
func (g *fakeGuest) reboot() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bootLocked()
}

func (g *fakeGuest) Session(ctx context.Context) (guest.Session, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.boot == nil || (g.managed && !g.running) {
		if g.boot != nil && g.beforeBoot != nil {
			g.beforeBoot()
		}
		g.bootLocked()
	}
	return &fakeSession{b: g.boot}, nil
}

func (g *fakeGuest) LogSession(ctx context.Context) (guest.Session, error) { return g.Session(ctx) }

func (g *fakeGuest) Restart(ctx context.Context) (guest.Session, error) {
	g.mu.Lock()
	g.restarts++
	g.bootLocked()
	g.mu.Unlock()
	g.waitAttached() // as a real boot takes longer than the log stream's reconnect
	return g.Session(ctx)
}

func (g *fakeGuest) Managed() bool { return g.managed }

func (g *fakeGuest) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.managed || g.running
}

func (g *fakeGuest) BootID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.boot == nil {
		return ""
	}
	return g.boot.id
}

func (g *fakeGuest) ConsoleLog() string { return "" }

func (g *fakeGuest) BeforeBoot(fn func()) {
	g.mu.Lock()
	g.beforeBoot = fn
	g.mu.Unlock()
}

// set changes the guest's behaviour under its lock.
func (g *fakeGuest) set(f func(g *fakeGuest)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGuest) reloadCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.reloads)
}

func (g *fakeGuest) restartCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.restarts
}

// logf appends a kernel log record; the caller holds g.mu.
func (b *fakeBoot) logf(format string, a ...any) {
	b.log = append(b.log, kmsg.Record{Seq: uint64(len(b.log)), Level: 6, Message: fmt.Sprintf(format, a...)})
	close(b.newLog)
	b.newLog = make(chan struct{})
}

// waitAttached waits (up to 10s) until the loop's log stream has attached
// to the current boot.
func (g *fakeGuest) waitAttached() {
	for range 2000 {
		g.mu.Lock()
		attached := false
		if g.boot != nil {
			for _, r := range g.boot.log {
				attached = attached || strings.HasPrefix(r.Message, markPrefix+"attached")
			}
		}
		g.mu.Unlock()
		if attached {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kernelLog appends lines to the current boot's log, as the guest kernel would.
func (g *fakeGuest) kernelLog(lines ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range lines {
		g.boot.logf("%s", l)
	}
}

// fakeSession is a connection to one boot; it fails once that boot is over.
type fakeSession struct{ b *fakeBoot }

var errBootOver = errors.New("connection lost: the guest rebooted")

// live locks the guest and reports whether the session's boot still runs.
func (s *fakeSession) live() bool {
	s.b.g.mu.Lock()
	return !s.b.ended
}

func (s *fakeSession) Release() string { return fakeRelease }
func (s *fakeSession) BootID() string  { return s.b.id }

func (s *fakeSession) Upload(ctx context.Context, local, name string) (string, int64, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return "", 0, errBootOver
	}
	remote := fakeUploadDir + "/" + name
	s.b.g.uploads = append(s.b.g.uploads, remote)
	s.b.g.uploadedFrom = append(s.b.g.uploadedFrom, local)
	return remote, 1, s.b.g.uploadErr
}

func (s *fakeSession) LoadDeps(ctx context.Context, depends, softPre []string) ([]string, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return nil, errBootOver
	}
	s.b.g.depLoads = append(s.b.g.depLoads, append(slices.Clone(depends), softPre...))
	var loaded []string
	for _, m := range append(slices.Clone(softPre), depends...) {
		if !s.b.g.kernelMods[m] {
			return loaded, &kmod.MissingError{Name: m}
		}
		if _, ok := s.b.loaded[m]; !ok {
			s.b.loaded[m] = "(kernel)"
			loaded = append(loaded, m)
		}
	}
	return loaded, nil
}

func (s *fakeSession) Reload(ctx context.Context, name, remote string, params []string) (guest.ReloadResult, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return guest.ReloadResult{}, errBootOver
	}
	s.b.g.reloads = append(s.b.g.reloads, remote+strings.Join(append([]string{""}, params...), " "))
	res, err := s.b.g.reload(s.b, name, remote)
	if s.b.g.hang {
		s.b.g.mu.Unlock()
		defer s.b.g.mu.Lock()
		select {
		case <-ctx.Done():
			return guest.ReloadResult{}, ctx.Err()
		case <-s.b.over:
			return guest.ReloadResult{}, errBootOver
		}
	}
	return res, err
}

func (s *fakeSession) RunStream(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error) {
	if !s.live() {
		s.b.g.mu.Unlock()
		return 0, errBootOver
	}
	s.b.g.runs = append(s.b.g.runs, cmd)
	r := s.b.g.runOutput[cmd]
	s.b.g.mu.Unlock()
	io.WriteString(stdout, r.out)
	if r.block {
		<-ctx.Done()
		return -1, ctx.Err()
	}
	return r.exit, r.err
}

// waitRuns waits until the guest has run n --run commands.
func (g *fakeGuest) waitRuns(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(5 * time.Millisecond) {
		g.mu.Lock()
		runs := len(g.runs)
		g.mu.Unlock()
		if runs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest ran %d --run commands, want %d", runs, n)
		}
	}
}

func (s *fakeSession) StreamKmsg(ctx context.Context, after uint64, fn func(kmsg.Record)) error {
	next := after + 1
	if after == 0 {
		next = 0
	}
	for {
		if !s.live() {
			s.b.g.mu.Unlock()
			return errBootOver
		}
		recs := append([]kmsg.Record(nil), s.b.log[min(next, uint64(len(s.b.log))):]...)
		wait := s.b.newLog
		s.b.g.mu.Unlock()
		for _, r := range recs {
			fn(r)
			next = r.Seq + 1
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.b.over:
			return errBootOver
		case <-wait:
		}
	}
}

func (s *fakeSession) WriteKmsg(ctx context.Context, msg string) error {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return errBootOver
	}
	s.b.logf("%s", msg)
	return nil
}

func (s *fakeSession) Tainted(ctx context.Context) (uint64, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return 0, errBootOver
	}
	return s.b.g.taint, s.b.g.taintErr
}

func (s *fakeSession) KUnit(ctx context.Context) (bool, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return false, errBootOver
	}
	return s.b.g.kunit, nil
}

func (s *fakeSession) ModuleUse(ctx context.Context, name string) (guest.ModuleUse, error) {
	defer s.b.g.mu.Unlock()
	if !s.live() {
		return guest.ModuleUse{}, errBootOver
	}
	return s.b.g.use, nil
}

// fakeBuilder builds what each step says, in order; the last step repeats.
type fakeBuilder struct {
	before func() // runs before each build's result is returned
	// check is the correctness net's check after a fast build (BeginVerify).
	check func(ctx context.Context) (*builder.Mismatch, error)

	mu     sync.Mutex
	steps  []buildStep
	builds int
	began  []string // "build", "check" and "settle", in the order the loop began them
}

type buildStep struct {
	ko      string        // the result
	fast    bool          // the fast path built it
	modules []string      // every module the build made (Result.Modules)
	err     error         // or this error
	block   chan struct{} // when set, the build waits for it (or for ctx)
}

func (b *fakeBuilder) Build(ctx context.Context, out io.Writer) (builder.Result, error) {
	b.mu.Lock()
	st := b.steps[min(b.builds, len(b.steps)-1)]
	b.builds++
	b.began = append(b.began, "build")
	b.mu.Unlock()
	if st.block != nil {
		select {
		case <-st.block:
		case <-ctx.Done():
			return builder.Result{}, ctx.Err()
		}
	}
	if b.before != nil {
		b.before()
	}
	if st.err != nil {
		return builder.Result{}, st.err
	}
	res := builder.Result{KO: st.ko, Modules: st.modules}
	if st.fast {
		res.Path = builder.PathFast
	}
	return res, nil
}

func (b *fakeBuilder) BeginVerify(ctx context.Context) func() (*builder.Mismatch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.check == nil {
		return nil
	}
	b.began = append(b.began, "check")
	return func() (*builder.Mismatch, error) { return b.check(ctx) }
}

func (b *fakeBuilder) Settle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.began = append(b.began, "settle")
}

// waitBegun waits until the loop began a step of kind ("build" or "check").
func (b *fakeBuilder) waitBegun(t *testing.T, kind string) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); !slices.Contains(b.order(), kind); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the loop never began a %s; it began %q", kind, b.order())
		}
	}
}

func (b *fakeBuilder) order() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.began...)
}

func (b *fakeBuilder) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builds
}

// fakeWatcher hands the loop the batches a test sends.
type fakeWatcher struct {
	batches chan watcher.Batch
	errors  chan error
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{batches: make(chan watcher.Batch), errors: make(chan error)}
}

func (w *fakeWatcher) Batches() <-chan watcher.Batch { return w.batches }
func (w *fakeWatcher) Errors() <-chan error          { return w.errors }

// close closes the channels, as watcher.Watcher.Close does once the loop
// is done with it.
func (w *fakeWatcher) close() {
	close(w.batches)
	close(w.errors)
}

// save sends a batch as a save of file would.
func (w *fakeWatcher) save(t *testing.T, file string) {
	t.Helper()
	select {
	case w.batches <- watcher.Batch{Changed: []string{file}}:
	case <-time.After(hangGuard):
		t.Fatal("the loop did not take a batch")
	}
}

// events records what the loop reports.
type recorder struct {
	mu  sync.Mutex
	all []event.Event
	new chan struct{}
}

func newEvents() *recorder { return &recorder{new: make(chan struct{})} }

func (e *recorder) Report(ev event.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
	close(e.new)
	e.new = make(chan struct{})
}

// of returns the events of kind typ so far.
func (e *recorder) of(typ event.Kind) []event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []event.Event
	for _, ev := range e.all {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// wait returns the n-th (from 1) event of kind typ, waiting for it.
func (e *recorder) wait(t *testing.T, typ event.Kind, n int) event.Event {
	t.Helper()
	return e.waitFor(t, fmt.Sprintf("%d. %s event", n, typ), func() (event.Event, bool) {
		evs := e.of(typ)
		if len(evs) < n {
			return event.Event{}, false
		}
		return evs[n-1], true
	})
}

// notice waits for a notice containing text.
func (e *recorder) notice(t *testing.T, text string) event.Event {
	t.Helper()
	return e.waitFor(t, fmt.Sprintf("notice %q", text), func() (event.Event, bool) {
		for _, ev := range e.of(event.KindNotice) {
			if strings.Contains(ev.Message, text) {
				return ev, true
			}
		}
		return event.Event{}, false
	})
}

// hangGuard bounds the tests' waits: a guard against a hang, not a speed
// goal, as the tests run in parallel on what may be a loaded machine.
const hangGuard = 30 * time.Second

// waitFor waits until find finds its event (what describes it).
func (e *recorder) waitFor(t *testing.T, what string, find func() (event.Event, bool)) event.Event {
	t.Helper()
	deadline := time.After(hangGuard)
	for {
		e.mu.Lock()
		ch := e.new
		e.mu.Unlock()
		if ev, ok := find(); ok {
			return ev
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s; got %s", what, e)
		}
	}
}

func (e *recorder) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, ev := range e.all {
		if ev.Type == "kmsg" {
			continue
		}
		fmt.Fprintf(&b, "\n  %s %q %s %s", ev.Type, ev.Module, ev.Message, ev.Hint)
	}
	return b.String()
}

// rig is one loop under test with its fakes.
type rig struct {
	t       *testing.T
	guest   *fakeGuest
	builder *fakeBuilder
	watch   *fakeWatcher
	events  *recorder
	cfg     Config
	dir     string
	cancel  context.CancelFunc
	done    chan error
}

// newRig makes a loop whose builds are steps; without steps, every build
// makes module hello.
func newRig(t *testing.T, managed bool, steps ...buildStep) *rig {
	r := &rig{t: t, guest: newFakeGuest(managed), builder: &fakeBuilder{steps: steps},
		watch: newFakeWatcher(), events: newEvents(), dir: t.TempDir()}
	// A real build takes longer than the log stream needs to attach; the
	// module's messages would otherwise count as history.
	r.builder.before = r.guest.waitAttached
	r.cfg = Config{Dir: r.dir, Builder: r.builder, Guest: r.guest, Report: r.events,
		BuildLog: io.Discard, StateDir: t.TempDir(), tickEvery: 10 * time.Millisecond,
		idleAfter: 20 * time.Millisecond}
	if len(steps) == 0 {
		r.builder.steps = []buildStep{r.ko("hello")}
	}
	return r
}

// alreadyLoaded boots the guest with module hello loaded before kwatch
// starts; rmmod fails with msg while use says what holds it.
func (r *rig) alreadyLoaded(msg string, use guest.ModuleUse) {
	r.guest.Session(context.Background())
	r.guest.set(func(g *fakeGuest) {
		g.boot.loaded["hello"] = "/old.ko"
		g.reload = rmmodFails(msg)
		g.use = use
	})
}

// ko writes a module built for the fake guest's kernel.
func (r *rig) ko(name string) buildStep {
	return buildStep{ko: buildertest.WriteKO(r.t, r.t.TempDir(), name, fakeRelease+" SMP preempt mod_unload ")}
}

// fastKO is ko built by the fast path.
func (r *rig) fastKO(name string) buildStep {
	st := r.ko(name)
	st.fast = true
	return st
}

// once runs the loop with --once and returns its error.
func (r *rig) once() error {
	r.cfg.Once = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Run(ctx, r.cfg)
}

// onceFails runs the loop with --once, which must fail to load, and returns
// the load_failed event.
func (r *rig) onceFails() event.Event {
	r.t.Helper()
	if err := r.once(); !errors.Is(err, ErrFailed) {
		r.t.Fatalf("Run --once = %v, want ErrFailed:%s", err, r.events)
	}
	return r.events.wait(r.t, event.KindLoadFailed, 1)
}

// start runs the loop in watch mode until the test ends.
func (r *rig) start() {
	r.cfg.Watch = r.watch
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- Run(ctx, r.cfg) }()
	r.t.Cleanup(func() { r.stop() })
}

// idle lets d pass on the clock of the test's synctest bubble, then waits
// until the loop has done all it does in that time: ticks included, nothing
// more happened than the test sees.
func idle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// stop ends a loop started with start and returns Run's error.
func (r *rig) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		r.watch.close()
		return err
	case <-time.After(hangGuard):
		r.t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

// lastUploadStripped checks that the last upload was the module's copy
// without debug info in the state dir, not the kept module itself.
func (r *rig) lastUploadStripped(t *testing.T) {
	t.Helper()
	r.guest.mu.Lock()
	defer r.guest.mu.Unlock()
	if from := r.guest.uploadedFrom[len(r.guest.uploadedFrom)-1]; filepath.Dir(from) != filepath.Join(r.cfg.StateDir, "upload") {
		t.Errorf("uploaded %s, want its copy without debug info in the state dir", from)
	}
}

// remote is where the loop uploads the module of build ko.
// fakeUploadDir is the fake guest's private upload directory.
const fakeUploadDir = "/tmp/kwatch.fake"

func remote(ko string) string { return fakeUploadDir + "/" + path.Base(ko) }

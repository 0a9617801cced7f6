// Package loop is kwatch's orchestrator: it turns batches of source changes
// into builds, pushes each good build into the guest, reloads it, runs the
// user's commands and keeps the guest's kernel log streaming.
package loop

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"kwatch/builder"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/watcher"
)

// ErrFailed means the job failed (a build, load or --run command); main maps it to exit code 1.
var ErrFailed = errors.New("failed")

// Config is everything one kwatch run needs.
type Config struct {
	Dir        string  // the watched root
	Watch      Watcher // the source changes; nil with Once
	Builder    builder.Builder
	Guest      guest.Guest
	Params     []string
	Run        []string
	RunTimeout time.Duration // bounds each --run command; 0 = no limit
	Once       bool
	Report     event.Reporter
	BuildLog   io.Writer // live build output
	StateDir   string    // where the last good module is kept; "" = nowhere

	// ConfigChanged is called before a rebuild when a batch touches a .nix file
	// or flake.lock (the nix dev env and the VM may need rebuilding). May be nil.
	ConfigChanged func(ctx context.Context) error

	tickEvery time.Duration // how often the guest is looked after; tests shorten it
	idleAfter time.Duration // how long without a save makes the guest idle; tests shorten it
}

type loop struct {
	cfg     Config
	report  event.Reporter
	kmsg    *kmsgStream
	crashes *crashWatch
	cycle   int

	toldModules bool // the user was told which of several built modules is loaded

	// The last module that loaded cleanly: a copy in the state dir (goodKO),
	// loaded again when a new build fails to load or the guest restarted, so
	// the guest is never left without one.
	goodKO, goodName string
	goodInfo         builder.Modinfo // its .modinfo: what it needs loaded first
	goodBoot         string          // the boot it was loaded into
	goodAt           time.Time       // when it was last loaded
	triedAt          time.Time       // when a build was last loaded, or tried

	// The boot in which the guest was asked whether it runs KUnit suites, its
	// answer, and whether the user was told that it does not.
	kunitBoot   string
	kunitOK     bool
	toldNoKUnit bool

	// The boot in which the module's dependencies were last loaded, and
	// which they were: they are loaded once per boot, not on every save.
	depsBoot, depsKey string

	held       *loadJob // a build waiting for its old module to be freed
	warnedBoot string   // the unmanaged guest's boot already warned about
	running    *runJob  // the --run commands after the last load, while they run
}

type buildDone struct {
	res   builder.Result
	err   error
	took  time.Duration
	start time.Time
}

// Run watches, builds and reloads until ctx is done (nil) or, with Once, after
// one cycle (nil on success, ErrFailed on failure).
func Run(ctx context.Context, cfg Config) error {
	l := &loop{cfg: cfg, report: cfg.Report}
	g := cfg.Guest
	l.crashes = newCrashWatch(cfg.Report, g.BootID)
	l.kmsg = newKmsgStream(g, cfg.Report, l.crashes)
	kctx, stopKmsg := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	if console := g.ConsoleLog(); console != "" {
		g.BeforeBoot(l.crashes.drainConsole)
		kwg.Add(1)
		go func() { defer kwg.Done(); l.crashes.tailConsole(kctx, console) }()
	}
	kwg.Add(1)
	go func() { defer kwg.Done(); l.kmsg.run(kctx) }()
	defer func() {
		stopKmsg()
		kwg.Wait()
		g.BeforeBoot(nil)
		// The fast path writes some of a build's records after handing the
		// module on: cut off by kwatch's exit, they would mislead the next make.
		cfg.Builder.Settle()
	}()

	if cfg.Once {
		return l.once(ctx)
	}
	go func() {
		for err := range cfg.Watch.Errors() {
			l.notice(err.Error())
		}
	}()
	return l.watch(ctx, cfg.Watch)
}

func (l *loop) once(ctx context.Context) error {
	start := time.Now()
	l.cycle++
	res, err := l.build(ctx)
	for errors.Is(err, builder.ErrSourcesChanged) {
		l.cycle++
		res, err = l.build(ctx)
	}
	took := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		l.buildFailed(err, took)
		return ErrFailed
	}
	return l.deploy(ctx, res, took, start)
}

func (l *loop) watch(ctx context.Context, w Watcher) error {
	var (
		done        = make(chan buildDone, 1)
		cancelBuild context.CancelFunc
		building    bool
		pending     = true // build once at start
		configDirty bool
		tick        = time.NewTicker(cmp.Or(l.cfg.tickEvery, tickEvery))
		net         = newNetCheck(ctx)
		netDue      time.Time      // when to check the last fast build; zero: nothing to check
		netRes      builder.Result // that build
	)
	defer tick.Stop()
	defer net.stop()
	defer l.stopRun(context.Canceled)
	for {
		if pending && !building {
			pending = false
			if configDirty && l.cfg.ConfigChanged != nil {
				configDirty = false
				if err := l.cfg.ConfigChanged(ctx); err != nil {
					l.error(err)
				}
			}
			cancelBuild = l.startBuild(ctx, done)
			building = true
		}
		select {
		case <-ctx.Done():
			if building {
				cancelBuild()
				<-done
			}
			return nil
		case b, ok := <-w.Batches():
			if !ok {
				return nil
			}
			if touchesConfig(b) {
				configDirty = true
			}
			pending = true
			netDue = time.Time{} // that build is about to be replaced
			// A command that never ends (a read() that never advances
			// *ppos) must not keep the fix from loading.
			l.cancelRun(stoppedBySave)
			if building {
				// The newest sources win: stop the running build and start over.
				cancelBuild()
			}
		case <-tick.C:
			l.tick(ctx, building)
			if !netDue.IsZero() && !building && !pending && time.Now().After(netDue) {
				// Begun here, on the loop's goroutine: the next build, which
				// stops the check, cannot start before it.
				netDue = time.Time{}
				net.start(l.cfg.Builder, netRes, l.error)
			}
		case <-l.runDone():
			l.running = nil
		case mm := <-net.found:
			l.fastPathWrong(ctx, mm, building)
		case d := <-done:
			building = false
			cancelBuild()
			switch {
			case d.err == nil:
				if pending {
					continue // sources changed since this build started
				}
				l.deploy(ctx, d.res, d.took, d.start)
				if d.res.Path == builder.PathFast {
					// The correctness net waits until the guest is idle:
					// its full make would compete with the next save's build.
					netDue, netRes = time.Now().Add(cmp.Or(l.cfg.idleAfter, idleAfter)), d.res
				}
			case errors.Is(d.err, context.Canceled):
			case errors.Is(d.err, builder.ErrSourcesChanged):
				pending = true // the batch with the change may still be on its way
			default:
				l.buildFailed(d.err, d.took)
			}
		}
	}
}

// startBuild runs one build in the background; the returned func cancels it.
func (l *loop) startBuild(ctx context.Context, done chan<- buildDone) context.CancelFunc {
	bctx, cancel := context.WithCancel(ctx)
	l.cycle++
	go func() {
		start := time.Now()
		res, err := l.build(bctx)
		done <- buildDone{res: res, err: err, took: time.Since(start), start: start}
	}()
	return cancel
}

func touchesConfig(b watcher.Batch) bool {
	if b.Rescan {
		return true
	}
	for _, p := range append(append([]string{}, b.Changed...), b.Removed...) {
		if strings.HasSuffix(p, ".nix") || path.Base(p) == "flake.lock" {
			return true
		}
	}
	return false
}

// build runs one build; it may run on its own goroutine, so the loop's
// goroutine counts the cycle.
func (l *loop) build(ctx context.Context) (builder.Result, error) {
	l.report.Report(event.Event{Type: event.KindBuildStart, Time: time.Now(), Message: l.cfg.Dir})
	return l.cfg.Builder.Build(ctx, l.cfg.BuildLog)
}

func (l *loop) buildFailed(err error, took time.Duration) {
	e := event.Event{Type: event.KindBuildFailed, Time: time.Now(), BuildMS: took.Milliseconds(), Message: err.Error(), Hint: event.Hint(err)}
	var be *builder.Error
	if errors.As(err, &be) {
		e.Diagnostics = be.Diagnostics
	}
	l.report.Report(e)
}

// deploy pushes a fresh build into the guest and reloads it. It returns
// ErrFailed when the module did not end up loaded or a --run command failed.
func (l *loop) deploy(ctx context.Context, res builder.Result, buildTook time.Duration, start time.Time) error {
	l.held = nil // a newer build replaces one waiting for its module to be freed
	info, err := builder.ReadModinfo(res.KO)
	if err != nil {
		l.error(err)
		return ErrFailed
	}
	l.crashes.setModule(info.Name, res.KO)
	l.tellModules(res)
	l.report.Report(event.Event{Type: event.KindBuildOK, Time: time.Now(), Module: info.Name, BuildMS: buildTook.Milliseconds(), Path: res.Path, Fallback: fallback(res)})
	return l.load(ctx, loadJob{res: res, info: info, took: buildTook, start: start})
}

// fallback says why the fast path did not replay a build, "" if it did.
func fallback(res builder.Result) string {
	if res.Fallback == nil {
		return ""
	}
	return res.Fallback.Error()
}

// tellModules says once which module kwatch loads when the build made several.
func (l *loop) tellModules(res builder.Result) {
	if len(res.Modules) < 2 || l.toldModules {
		return
	}
	l.toldModules = true
	l.notice(fmt.Sprintf("obj-m builds %d modules (%s); kwatch loads %s only: --module NAME loads another",
		len(res.Modules), strings.Join(res.Modules, ", "), strings.TrimSuffix(path.Base(res.KO), ".ko")))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (l *loop) notice(msg string) {
	event.Notice(l.report, msg)
}

func (l *loop) error(err error) {
	event.Error(l.report, err)
}

// Package loop is kwatch's orchestrator: it turns batches of source changes
// into builds, pushes each good build into the guest, reloads it, runs the
// user's commands and keeps the guest's kernel log streaming.
package loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"kwatch/builder"
	"kwatch/guest"
	"kwatch/watcher"
)

// ErrFailed means the job failed (a build, load or --run command); main maps it to exit code 1.
var ErrFailed = errors.New("failed")

// RemoteDir is where modules are uploaded in the guest.
const RemoteDir = "/tmp/kwatch"

// Config is everything one kwatch run needs.
type Config struct {
	Dir      string // the watched root
	Ignore   []string
	Quiet    time.Duration
	MaxWait  time.Duration
	Builder  builder.Builder
	Guest    *Guest
	Params   []string
	Run      []string
	Once     bool
	Report   Reporter
	BuildLog io.Writer // live build output

	// ConfigChanged is called before a rebuild when a batch touches a .nix file
	// or flake.lock (the nix dev env and the VM may need rebuilding). May be nil.
	ConfigChanged func(ctx context.Context) error
}

type loop struct {
	cfg    Config
	report Reporter
	kmsg   *kmsgStream
	cycle  int
	// good is the remote path of the last module that loaded cleanly; it is
	// re-loaded when a new build fails to load, so the guest is never left without one.
	good string
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
	l.kmsg = newKmsgStream(cfg.Guest, cfg.Report)
	kctx, stopKmsg := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() { defer kwg.Done(); l.kmsg.run(kctx) }()
	defer func() { stopKmsg(); kwg.Wait() }()

	if cfg.Once {
		return l.once(ctx)
	}
	w, err := watcher.New(cfg.Dir, watcher.Options{Quiet: cfg.Quiet, MaxWait: cfg.MaxWait, Ignore: cfg.Ignore})
	if err != nil {
		return err
	}
	defer w.Close()
	go func() {
		for err := range w.Errors() {
			l.notice(err.Error())
		}
	}()
	return l.watch(ctx, w)
}

func (l *loop) once(ctx context.Context) error {
	start := time.Now()
	res, err := l.build(ctx)
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

func (l *loop) watch(ctx context.Context, w *watcher.Watcher) error {
	var (
		done        = make(chan buildDone, 1)
		cancelBuild context.CancelFunc
		building    bool
		pending     = true // build once at start
		configDirty bool
	)
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
			if building {
				// The newest sources win: stop the running build and start over.
				cancelBuild()
			}
		case d := <-done:
			building = false
			cancelBuild()
			switch {
			case d.err == nil:
				if pending {
					continue // sources changed since this build started
				}
				l.deploy(ctx, d.res, d.took, d.start)
			case errors.Is(d.err, context.Canceled):
			default:
				l.buildFailed(d.err, d.took)
			}
		}
	}
}

// startBuild runs one build in the background; the returned func cancels it.
func (l *loop) startBuild(ctx context.Context, done chan<- buildDone) context.CancelFunc {
	bctx, cancel := context.WithCancel(ctx)
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

func (l *loop) build(ctx context.Context) (builder.Result, error) {
	l.cycle++
	l.report.Report(Event{Type: "build_start", Time: time.Now(), Message: l.cfg.Dir})
	return l.cfg.Builder.Build(ctx, l.cfg.BuildLog)
}

func (l *loop) buildFailed(err error, took time.Duration) {
	e := Event{Type: "build_failed", Time: time.Now(), BuildMS: took.Milliseconds(), Message: err.Error()}
	var be *builder.Error
	if errors.As(err, &be) {
		e.Diagnostics, e.Hint = be.Diagnostics, be.Hint
	}
	l.report.Report(e)
}

// deploy pushes a fresh build into the guest and reloads it. It returns
// ErrFailed when the module did not end up loaded or a --run command failed.
func (l *loop) deploy(ctx context.Context, res builder.Result, buildTook time.Duration, start time.Time) error {
	info, err := builder.ReadModinfo(res.KO)
	if err != nil {
		l.error(err)
		return ErrFailed
	}
	name := info.Name
	l.report.Report(Event{Type: "build_ok", Time: time.Now(), Module: name, BuildMS: buildTook.Milliseconds()})
	fail := func(msg, hint string) error {
		l.report.Report(Event{Type: "load_failed", Time: time.Now(), Module: name, Message: msg, Hint: hint})
		return ErrFailed
	}

	c, release, err := l.cfg.Guest.Connect(ctx)
	if err != nil {
		return fail(err.Error(), "")
	}
	// Check vermagic before touching the guest: a mismatch would only fail in
	// insmod after the old module was already removed.
	if vm := info.Vermagic; vm != "" && !strings.HasPrefix(vm, release+" ") && vm != release {
		return fail(fmt.Sprintf("built for kernel %q but the guest runs %s", strings.Fields(vm)[0], release),
			fmt.Sprintf("build against the guest's kernel: --kdir /lib/modules/%s/build", release))
	}

	t := time.Now()
	remote := RemoteDir + "/" + path.Base(res.KO)
	if _, err := c.Upload(ctx, res.KO, remote); err != nil {
		return fail(fmt.Sprintf("uploading %s: %v", path.Base(res.KO), err), "")
	}
	uploadTook := time.Since(t)

	t = time.Now()
	r, err := c.Reload(ctx, name, remote, l.cfg.Params)
	reloadTook := time.Since(t)
	if err != nil {
		return fail(fmt.Sprintf("reloading: %v", err), "")
	}
	if r.UnloadErr != "" {
		return fail("rmmod: "+firstLine(r.UnloadErr), "the old module is still loaded and in use; close what holds it and save again")
	}
	if r.LoadErr != "" {
		msg, hint := "insmod: "+firstLine(r.LoadErr), insmodHint(r.LoadErr)
		if l.good != "" {
			if rr, err := c.Reload(ctx, name, l.good, l.cfg.Params); err == nil && rr.LoadErr == "" {
				msg += " (the previous build was loaded again)"
			}
		}
		return fail(msg, hint)
	}
	good := RemoteDir + "/good-" + path.Base(res.KO)
	if _, _, exit, err := c.Run(ctx, "cp "+guest.Quote(remote)+" "+guest.Quote(good)); err == nil && exit == 0 {
		l.good = good
	}
	// Wait until the log stream has caught up with this load, so the module's
	// init messages come before the status line (and before --once exits).
	l.kmsg.sync(ctx, c, fmt.Sprintf("kwatch: %s loaded (cycle %d)", name, l.cycle))
	l.report.Report(Event{Type: "loaded", Time: time.Now(), Module: path.Base(res.KO),
		BuildMS: buildTook.Milliseconds(), UploadMS: uploadTook.Milliseconds(),
		ReloadMS: reloadTook.Milliseconds(), TotalMS: time.Since(start).Milliseconds()})

	failed := false
	for _, cmd := range l.cfg.Run {
		stdout, stderr, exit, err := c.Run(ctx, cmd)
		if err != nil {
			l.error(fmt.Errorf("running %q in the guest: %w", cmd, err))
			failed = true
			continue
		}
		l.report.Report(Event{Type: "run_output", Time: time.Now(), Command: cmd,
			Output: string(stdout) + string(stderr), Exit: &exit})
		failed = failed || exit != 0
	}
	if failed {
		return ErrFailed
	}
	return nil
}

// insmodHint turns insmod's complaint into the likely fix. Busybox and kmod
// word errors differently, so match on the errno text both print.
func insmodHint(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "invalid module format"):
		return "the module does not match the guest kernel (vermagic or format): rebuild against the guest's kernel headers"
	case strings.Contains(m, "unknown symbol"):
		return "the module uses a symbol the guest kernel does not export: load its dependency first or check MODULE_LICENSE"
	case strings.Contains(m, "file exists"):
		return "a module with this name is already loaded"
	case strings.Contains(m, "invalid parameters") || strings.Contains(m, "invalid argument"):
		return "check --params against the module's parameters (modinfo -p), or the module's init returned -EINVAL"
	case strings.Contains(m, "key was rejected") || strings.Contains(m, "required key"):
		return "the guest requires signed modules: disable module.sig_enforce in the guest"
	case strings.Contains(m, "operation not permitted"):
		return "module loading is not permitted in the guest (root? kernel.modules_disabled?)"
	}
	return "the module's init failed: see the kernel log above"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (l *loop) notice(msg string) {
	l.report.Report(Event{Type: "notice", Time: time.Now(), Message: msg})
}

func (l *loop) error(err error) {
	l.report.Report(Event{Type: "error", Time: time.Now(), Message: err.Error()})
}

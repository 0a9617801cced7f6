package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"kwatch/builder"
	"kwatch/crash"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/kmod"
)

// loadJob is a good build on its way into the guest.
type loadJob struct {
	res   builder.Result
	info  builder.Modinfo
	took  time.Duration // the build's
	start time.Time     // the build's start
}

// load uploads and reloads a good build and runs the --run commands: with
// Once before it returns, else in the background. A build that does not
// load is reported as load_failed.
func (l *loop) load(ctx context.Context, b loadJob) error {
	// A command of the last load may hold the module open.
	l.stopRun(stoppedForLoad)
	a := &attempt{loadJob: b}
	defer a.done()
	if err := l.install(ctx, a); err != nil {
		return l.loadFailed(ctx, a, err)
	}
	l.loaded(ctx, a)
	return l.afterLoad(ctx, a)
}

// attempt is a build on its way into the guest: what each step of load
// found out for the next.
type attempt struct {
	loadJob
	s      guest.Session
	upload string   // the copy of the module to upload
	remote string   // where it is in the guest
	sent   int64    // its size
	tests  *testRun // its KUnit suites, when they run in its insmod
	mark   int      // the kernel log's place before the reload

	uploadTook, reloadTook time.Duration
}

// done stops collecting the kernel log for the KUnit results.
func (a *attempt) done() {
	if a.tests != nil {
		a.tests.results()
	}
}

// loadError is why a build did not load: the load_failed event's message,
// hint, and what holds the old module.
type loadError struct {
	msg, hint string
	holders   []string
	restore   bool // the guest died: the last good build goes into the new one
}

func (e *loadError) Error() string { return e.msg }
func (e *loadError) Hint() string  { return e.hint }

// install puts the build into the guest in place of the old module. When it
// did not load, the error is a *loadError.
func (l *loop) install(ctx context.Context, a *attempt) error {
	if err := l.prepare(ctx, a); err != nil {
		return err
	}
	l.triedAt = time.Now()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := l.loadDeps(sctx, a.s, a.info); err != nil {
		return &loadError{msg: l.depsError(err, a.loadJob),
			hint: "kwatch loads a module's dependencies from the guest kernel's own modules: install them there (for --vm qemu, --modules-dir names the dir), or build without the dependency"}
	}
	if err := l.upload(sctx, a); err != nil {
		return err
	}
	r, err := l.reload(ctx, sctx, a)
	switch {
	case err != nil:
		return err
	case r.UnloadErr != "":
		return l.unloadFailed(ctx, a, r.UnloadErr)
	case r.LoadErr != "":
		return l.insmodFailed(ctx, a, r.LoadErr)
	}
	return nil
}

// prepare gets a guest fit to take the module, and meanwhile the copy to
// upload. It checks vermagic before touching the guest: a mismatch would
// only fail in insmod after the old module was already removed.
func (l *loop) prepare(ctx context.Context, a *attempt) error {
	cctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	copied := make(chan string, 1)
	go func() { copied <- l.uploadCopy(cctx, a.res.KO) }()
	s, err := l.ready(ctx)
	a.upload = <-copied
	if err != nil {
		return &loadError{msg: err.Error()}
	}
	a.s = s
	release := s.Release()
	if vm := a.info.Vermagic; vm != "" && !strings.HasPrefix(vm, release+" ") && vm != release {
		return &loadError{msg: fmt.Sprintf("built for kernel %q but the guest runs %s", strings.Fields(vm)[0], release),
			hint: fmt.Sprintf("build against the guest's kernel: --kdir /lib/modules/%s/build", release)}
	}
	return nil
}

// upload copies the module into the guest.
func (l *loop) upload(ctx context.Context, a *attempt) error {
	t := time.Now()
	remote, sent, err := a.s.Upload(ctx, a.upload, path.Base(a.res.KO))
	if err != nil {
		return &loadError{msg: fmt.Sprintf("uploading %s: %v", path.Base(a.res.KO), err)}
	}
	a.remote, a.sent, a.uploadTook = remote, sent, time.Since(t)
	return nil
}

// reload replaces the old module with the new one (within sctx, the step's
// time), following its KUnit suites when they run in its insmod: an oops in
// one stops the wait for insmod.
func (l *loop) reload(ctx, sctx context.Context, a *attempt) (guest.ReloadResult, error) {
	name := a.info.Name
	rctx, cancel := context.WithCancel(sctx)
	defer cancel()
	if l.kunitRuns(sctx, a.s, a.info) {
		a.tests = l.startTests(cancel)
	}
	t := time.Now()
	a.mark = l.kmsg.mark()
	r, err := a.s.Reload(rctx, name, a.remote, l.cfg.Params)
	a.reloadTook = time.Since(t)
	if oopsed := a.tests.reloaded(); err != nil && oopsed != "" && ctx.Err() == nil {
		l.kmsg.sync(ctx, a.s, fmt.Sprintf("%s oopsed in its KUnit tests (cycle %d)", name, l.cycle))
		l.kunitResults(a.info, a.tests.results(), oopsed)
		return r, &loadError{msg: fmt.Sprintf("a KUnit case oopsed while %s loaded: kwatch stopped waiting for insmod", name),
			hint: "see the crash report; the VM restarts before the next load"}
	}
	switch {
	case err != nil && l.vmDied(ctx):
		// A panic in the module's init: the crash report comes from the
		// console. The last good build goes back into the new VM.
		return r, &loadError{msg: "the guest died while loading " + name, hint: "see the crash report; fix the module and save again", restore: true}
	case err != nil:
		return r, &loadError{msg: fmt.Sprintf("reloading: %v", err)}
	}
	return r, nil
}

// unloadFailed says why rmmod could not remove the old module (unloadErr)
// and, while something holds it, keeps the build to load once it is free.
func (l *loop) unloadFailed(ctx context.Context, a *attempt, unloadErr string) error {
	use, holders, held, stuck := l.whoHolds(ctx, a.s, a.info.Name)
	switch {
	case stuck:
		l.crashes.markDirty(use)
		if !l.cfg.Guest.Managed() {
			// Nothing but a reboot frees it, and kwatch cannot reboot a
			// machine it does not own: retrying would fail forever.
			return &loadError{msg: use, hint: "reboot the guest (kwatch does not manage it, so it cannot restart it), then save again"}
		}
		if !l.cfg.Once {
			l.held = &a.loadJob
		}
		return &loadError{msg: use, hint: "kwatch restarts the VM and loads the new build"}
	case !held:
		// Not held: rmmod refused for another reason (no module_exit, say).
		cause, hint := crash.LoadError(unloadErr, nil)
		return &loadError{msg: "rmmod: " + cause, hint: hint}
	case l.cfg.Once:
		return &loadError{msg: use, hint: "close what holds it and run again", holders: holders}
	}
	l.held = &a.loadJob
	return &loadError{msg: use, hint: "close what holds it: kwatch loads the new build as soon as it is free", holders: holders}
}

// insmodFailed says why insmod refused the module (loadErr, and what the
// kernel logged) and loads the last good build again, unless the failed one
// is stuck in the guest.
func (l *loop) insmodFailed(ctx context.Context, a *attempt, loadErr string) error {
	name := a.info.Name
	// A dependency unloaded since (by hand, or by a --run command)
	// fails insmod: the next load checks them again.
	l.depsBoot = ""
	l.kmsg.sync(ctx, a.s, fmt.Sprintf("%s failed to load (cycle %d)", name, l.cycle))
	cause, hint := crash.LoadError(loadErr, l.kmsg.since(a.mark))
	if a.tests != nil {
		l.kunitResults(a.info, a.tests.results(), "")
	}
	msg := "insmod: " + cause
	if _, _, _, stuck := l.whoHolds(ctx, a.s, name); stuck {
		l.crashes.markDirty(name + " is stuck after its init failed")
		if l.cfg.Guest.Managed() {
			msg += "; the module is stuck, so the VM is restarted before the next load"
		} else {
			msg += "; the module is stuck until the guest is rebooted (kwatch does not manage it)"
		}
	} else if l.goodKO != "" && l.loadGood(ctx, a.s) == "" {
		l.goodAt = time.Now()
		msg += " (the previous build was loaded again)"
	}
	return &loadError{msg: msg, hint: hint}
}

// loadFailed reports why a build did not load, and returns ErrFailed.
func (l *loop) loadFailed(ctx context.Context, a *attempt, err error) error {
	le := &loadError{msg: err.Error()}
	errors.As(err, &le)
	l.report.Report(event.Event{Type: event.KindLoadFailed, Time: time.Now(), Module: a.info.Name, Message: le.msg, Hint: event.Hint(err), Holders: le.holders})
	if le.restore {
		l.restore(ctx, false)
	}
	return ErrFailed
}

// loaded keeps the build as the last good one and reports it, once the log
// stream has caught up with this load: the module's init messages come
// before the status line (and before --once exits).
func (l *loop) loaded(ctx context.Context, a *attempt) {
	name := a.info.Name
	l.keepGood(a.loadJob, name, a.s.BootID())
	l.kmsg.sync(ctx, a.s, fmt.Sprintf("%s loaded (cycle %d)", name, l.cycle))
	l.report.Report(event.Event{Type: event.KindLoaded, Time: time.Now(), Module: path.Base(a.res.KO), Path: a.res.Path, Fallback: fallback(a.res),
		BuildMS: a.took.Milliseconds(), UploadMS: a.uploadTook.Milliseconds(), UploadBytes: a.sent,
		ReloadMS: a.reloadTook.Milliseconds(), TotalMS: time.Since(a.start).Milliseconds()})
}

// afterLoad reports the module's KUnit results and runs the --run commands:
// with Once before it returns (ErrFailed when a command or the suites
// failed), else in the background.
func (l *loop) afterLoad(ctx context.Context, a *attempt) error {
	// A module with suites fails when they fail, or when no results came.
	testsFailed := a.info.KUnitSuites > 0
	if a.tests != nil {
		testsFailed = l.kunitResults(a.info, a.tests.results(), "")
	}
	if !l.cfg.Once {
		l.startRun(ctx, a.s)
		return nil
	}
	if l.runCommands(ctx, a.s) || testsFailed {
		return ErrFailed
	}
	return nil
}

// keepGood copies a module that loaded cleanly into the state dir: the build
// dir is overwritten by the next build, and a restarted guest gets this one.
func (l *loop) keepGood(b loadJob, name, boot string) {
	l.goodName, l.goodInfo, l.goodBoot, l.goodAt = name, b.info, boot, time.Now()
	if l.cfg.StateDir == "" {
		return
	}
	dst := filepath.Join(l.cfg.StateDir, "last-good", path.Base(b.res.KO))
	if err := copyFile(b.res.KO, dst); err != nil {
		l.error(fmt.Errorf("keeping a copy of the last good module: %w", err))
		l.goodKO = ""
		return
	}
	l.goodKO = dst
}

// loadDeps loads what a module needs before it, once per boot; a module
// that needs nothing costs nothing.
func (l *loop) loadDeps(ctx context.Context, s guest.Session, info builder.Modinfo) error {
	softPre := kmod.SoftPre(strings.Join(info.Fields["softdep"], " "))
	if len(info.Depends) == 0 && len(softPre) == 0 {
		return nil
	}
	key := strings.Join(info.Depends, ",") + " " + strings.Join(softPre, ",")
	if l.depsBoot == s.BootID() && l.depsKey == key {
		return nil
	}
	loaded, err := s.LoadDeps(ctx, info.Depends, softPre)
	if len(loaded) > 0 {
		them := "it"
		if len(loaded) > 1 {
			them = "them"
		}
		l.notice(fmt.Sprintf("loaded %s in the guest first: %s needs %s", strings.Join(loaded, ", "), info.Name, them))
	}
	if err != nil {
		return err
	}
	l.depsBoot, l.depsKey = s.BootID(), key
	return nil
}

// depsError says why a module's dependencies did not load and, for one
// that is missing, which of its symbols the module needs it for.
func (l *loop) depsError(err error, b loadJob) string {
	msg := "dependencies: " + err.Error()
	var me *kmod.MissingError
	if !errors.As(err, &me) || me.Needer != "" || b.res.Symvers == "" {
		return msg
	}
	ko, kerr := kmod.Read(b.res.KO)
	symvers, serr := os.ReadFile(b.res.Symvers)
	if kerr != nil || serr != nil {
		return msg
	}
	if sym := kmod.SymbolFrom(ko, symvers, me.Name); sym != "" {
		msg += fmt.Sprintf("; %s needs it for %s", b.info.Name, sym)
	}
	return msg
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(dst+".tmp", data, 0o600); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

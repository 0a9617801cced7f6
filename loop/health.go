package loop

import (
	"context"
	"fmt"
	"strings"
	"time"

	"kwatch/crash"
	"kwatch/guest"
)

const (
	// How often the watch loop looks after the guest and a held module.
	tickEvery = time.Second
	// How long without a save makes the guest idle, so that the correctness
	// net's full make may run.
	idleAfter = 2 * time.Second
	// stepTimeout bounds one step of a reload (a check, the upload, the
	// rmmod+insmod), so a guest that hangs mid-reload ends in an error.
	stepTimeout = time.Minute
)

// ready returns a session with a guest fit to take a module. A managed VM
// that oopsed (taint D, or a crash report seen) or no longer answers is
// restarted first; an unmanaged one only gets a warning.
func (l *loop) ready(ctx context.Context) (guest.Session, error) {
	g := l.cfg.Guest
	s, err := g.Session(ctx)
	if err != nil {
		return nil, err
	}
	why := l.crashes.takeDirty()
	tctx, cancel := context.WithTimeout(ctx, stepTimeout/3)
	taint, err := s.Tainted(tctx)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		if !g.Managed() {
			return nil, fmt.Errorf("the guest does not answer: %w", err)
		}
		why = "it does not answer over SSH"
	case strings.Contains(crash.Taint(taint), "D") && why == "":
		why = "its kernel oopsed (taint " + crash.Taint(taint) + ")"
	}
	if why == "" {
		return s, nil
	}
	if !g.Managed() {
		if l.warnedBoot != s.BootID() {
			l.warnedBoot = s.BootID()
			l.notice("the guest is unreliable until it reboots: " + why + "; kwatch does not manage it, so reboot it yourself")
		}
		return s, nil
	}
	l.notice("restarting the VM before loading: " + why)
	return g.Restart(ctx)
}

// tick looks after the guest between builds: it retries a module that was
// held, and loads the last good module into a managed VM that restarted
// without it (its owner boots a VM that died or stopped answering).
func (l *loop) tick(ctx context.Context, building bool) {
	if l.held != nil && !building {
		l.retryHeld(ctx)
	}
	g := l.cfg.Guest
	if !g.Managed() || l.goodKO == "" {
		return
	}
	if boot := g.BootID(); boot == "" || boot == l.goodBoot {
		return
	}
	// A crash after a later load attempt is that attempt's fault.
	l.restore(ctx, !l.triedAt.After(l.goodAt) && l.crashes.crashedSince(l.goodName, l.goodAt))
}

// restore loads the last good module into a guest that restarted without it,
// unless that module is what crashed the guest.
func (l *loop) restore(ctx context.Context, goodCrashed bool) {
	s, err := l.cfg.Guest.Session(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.error(err)
		}
		return
	}
	boot := s.BootID()
	if l.goodKO == "" || boot == l.goodBoot {
		return
	}
	l.goodBoot = boot // one try per boot
	if goodCrashed {
		l.notice(fmt.Sprintf("the guest restarted; not loading %s again, it crashed the guest: save a fix", l.goodName))
		return
	}
	l.stopRun(stoppedForLoad)
	if msg := l.loadGood(ctx, s); msg != "" {
		l.notice("the guest restarted; loading the last good " + l.goodName + " again failed: " + msg)
		return
	}
	l.goodAt = time.Now()
	l.notice("the guest restarted; loaded the last good " + l.goodName + " again")
}

// loadGood uploads the kept copy of the last module that loaded cleanly and
// loads it; it returns what went wrong, or "".
func (l *loop) loadGood(ctx context.Context, s guest.Session) string {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := l.loadDeps(ctx, s, l.goodInfo); err != nil {
		return err.Error()
	}
	remote, _, err := s.Upload(ctx, l.uploadCopy(ctx, l.goodKO), "good-"+l.goodName+".ko")
	if err != nil {
		return err.Error()
	}
	r, err := s.Reload(ctx, l.goodName, remote, l.cfg.Params)
	switch {
	case err != nil:
		return err.Error()
	case r.UnloadErr != "":
		return firstLine(r.UnloadErr)
	case r.LoadErr != "":
		return firstLine(r.LoadErr)
	}
	return ""
}

// vmDied reports whether a managed VM's process is gone, or goes within a
// few seconds: after a panic the SSH connection may drop before QEMU exits.
func (l *loop) vmDied(ctx context.Context) bool {
	if !l.cfg.Guest.Managed() {
		return false
	}
	for range 10 {
		if !l.cfg.Guest.Running() {
			return true
		}
		sleep(ctx, 300*time.Millisecond)
	}
	return false
}

// whoHolds explains why module name could not be removed: msg says what
// holds it, holders who. held is false when nothing does, and stuck is true
// for a module stuck in its init or exit, which can never be removed: the
// guest needs a restart.
func (l *loop) whoHolds(ctx context.Context, s guest.Session, name string) (msg string, holders []string, held, stuck bool) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	u, err := s.ModuleUse(ctx, name)
	if err != nil {
		return fmt.Sprintf("module %s is in use (%v)", name, err), nil, true, false
	}
	if u.InitState != "" && u.InitState != "live" {
		return fmt.Sprintf("module %s is stuck (initstate %s): its init or exit crashed or hangs", name, u.InitState), nil, false, true
	}
	for _, h := range u.Holders {
		holders = append(holders, "module "+h+" uses it")
	}
	holders = append(holders, u.Openers...)
	return fmt.Sprintf("module %s is in use (refcount %d)", name, u.Refcnt), holders, u.Refcnt > 0 || len(holders) > 0, false
}

// retryHeld loads the build that waits for its old module to be freed, once
// the refcount is 0 or the guest needs a restart anyway.
func (l *loop) retryHeld(ctx context.Context) {
	s, err := l.cfg.Guest.Session(ctx)
	if err != nil {
		return
	}
	if l.crashes.dirtyNow() == "" {
		tctx, cancel := context.WithTimeout(ctx, stepTimeout)
		u, err := s.ModuleUse(tctx, l.held.info.Name)
		cancel()
		if err != nil || u.Refcnt > 0 {
			return
		}
	}
	b := *l.held
	l.held = nil
	l.notice(b.info.Name + " is free now: loading the new build")
	l.load(ctx, b)
}

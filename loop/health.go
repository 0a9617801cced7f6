package loop

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"kwatch/crash"
	"kwatch/guest"
)

const (
	// How often the watch loop looks after the guest and a held module.
	tickEvery = time.Second
	// How often a running managed VM's SSH server is checked, and how long it
	// may stay silent before the VM counts as dead: a guest whose sshd died
	// or that hangs is restarted rather than waited for forever.
	probeEvery   = 5 * time.Second
	sshDeadAfter = 20 * time.Second
	// stepTimeout bounds one step of a reload (a check, the upload, the
	// rmmod+insmod), so a guest that hangs mid-reload ends in an error.
	stepTimeout = time.Minute
)

// ready returns a client for a guest fit to take a module. A managed VM that
// oopsed (taint D, or a crash report seen) or no longer answers is
// restarted first; an unmanaged one only gets a warning.
func (l *loop) ready(ctx context.Context) (*guest.Client, string, error) {
	g := l.cfg.Guest
	c, release, err := g.Connect(ctx)
	if err != nil {
		return nil, "", err
	}
	why := l.crashes.takeDirty()
	tctx, cancel := context.WithTimeout(ctx, stepTimeout/3)
	out, _, _, err := c.Run(tctx, "cat /proc/sys/kernel/tainted")
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, "", ctx.Err()
	case err != nil:
		if g.VM == nil {
			return nil, "", fmt.Errorf("the guest does not answer: %w", err)
		}
		if g.VM.Debugged() {
			return nil, "", fmt.Errorf("the guest does not answer while kwatch gdb holds it stopped: continue it in gdb, then save again")
		}
		why = "it does not answer over SSH"
	default:
		v, _ := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
		if strings.Contains(crash.Taint(v), "D") && why == "" {
			why = "its kernel oopsed (taint " + crash.Taint(v) + ")"
		}
	}
	if why == "" {
		return c, release, nil
	}
	if g.VM == nil {
		if l.warnedBoot != g.BootID() {
			l.warnedBoot = g.BootID()
			l.notice("the guest is unreliable until it reboots: " + why + "; kwatch does not manage it, so reboot it yourself")
		}
		return c, release, nil
	}
	l.notice("restarting the VM before loading: " + why)
	return g.Restart(ctx)
}

// tick looks after the guest between builds: it retries a module that was
// held, brings back a managed VM that died or stopped answering, and loads
// the last good module into a guest that restarted without it.
func (l *loop) tick(ctx context.Context, building bool) {
	if l.held != nil && !building {
		l.retryHeld(ctx)
	}
	g := l.cfg.Guest
	if g.VM == nil {
		return
	}
	_, running, _ := g.VM.Status()
	if running && (l.goodKO == "" || g.BootID() == l.goodBoot) {
		l.probe(ctx)
		return
	}
	// The VM died (a panic, or killed), or the log stream already booted it
	// again. A crash after a later load attempt is that attempt's fault.
	l.restore(ctx, !l.triedAt.After(l.goodAt) && l.crashes.crashedSince(l.goodName, l.goodAt))
}

// probe restarts a running managed VM whose SSH server stopped answering.
func (l *loop) probe(ctx context.Context) {
	if time.Since(l.probed) < probeEvery {
		return
	}
	l.probed = time.Now()
	// A guest stopped in `kwatch gdb` is silent, not dead.
	if l.cfg.Guest.VM.Answering() || l.cfg.Guest.VM.Debugged() {
		l.silentSince = time.Time{}
		return
	}
	if l.silentSince.IsZero() {
		l.silentSince = time.Now()
		return
	}
	if time.Since(l.silentSince) < sshDeadAfter {
		return
	}
	l.silentSince = time.Time{}
	l.notice(fmt.Sprintf("the VM runs but its SSH server has not answered for %s: restarting the VM", sshDeadAfter))
	if _, _, err := l.cfg.Guest.Restart(ctx); err != nil {
		l.error(err)
		return
	}
	l.restore(ctx, false)
}

// restore loads the last good module into a guest that restarted without it,
// unless that module is what crashed the guest.
func (l *loop) restore(ctx context.Context, goodCrashed bool) {
	c, _, err := l.cfg.Guest.Connect(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.error(err)
		}
		return
	}
	boot := l.cfg.Guest.BootID()
	if l.goodKO == "" || boot == l.goodBoot {
		return
	}
	l.goodBoot = boot // one try per boot
	if goodCrashed {
		l.notice(fmt.Sprintf("the guest restarted; not loading %s again, it crashed the guest: save a fix", l.goodName))
		return
	}
	if msg := l.loadGood(ctx, c); msg != "" {
		l.notice("the guest restarted; loading the last good " + l.goodName + " again failed: " + msg)
		return
	}
	l.goodAt = time.Now()
	l.notice("the guest restarted; loaded the last good " + l.goodName + " again")
}

// loadGood uploads the kept copy of the last module that loaded cleanly and
// loads it; it returns what went wrong, or "".
func (l *loop) loadGood(ctx context.Context, c *guest.Client) string {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	remote := RemoteDir + "/good-" + l.goodName + ".ko"
	if _, err := c.Upload(ctx, l.goodKO, remote); err != nil {
		return err.Error()
	}
	r, err := c.Reload(ctx, l.goodName, remote, l.cfg.Params)
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
	if l.cfg.Guest.VM == nil {
		return false
	}
	for range 10 {
		if _, running, _ := l.cfg.Guest.VM.Status(); !running {
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
func (l *loop) whoHolds(ctx context.Context, c *guest.Client, name string) (msg string, holders []string, held, stuck bool) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	u, err := c.ModuleUse(ctx, name)
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
	c, _, err := l.cfg.Guest.Connect(ctx)
	if err != nil {
		return
	}
	if l.crashes.dirtyNow() == "" {
		mod := strings.ReplaceAll(l.held.info.Name, "-", "_")
		tctx, cancel := context.WithTimeout(ctx, stepTimeout)
		out, _, _, err := c.Run(tctx, "cat "+guest.Quote("/sys/module/"+mod+"/refcnt"))
		cancel()
		if n, perr := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || (perr == nil && n > 0) {
			return
		}
	}
	b := *l.held
	l.held = nil
	l.notice(b.info.Name + " is free now: loading the new build")
	l.load(ctx, b)
}

// Package machine owns the guest kwatch loads modules into. Open prepares a
// guest of each kind, one file per kind (open_qemu.go, open_nix.go,
// open_ssh.go; a new backend is a new file and a case in Open's switch);
// then one goroutine boots a managed VM, checks its health, restarts it and
// keeps the one SSH session to it, and everyone else asks that goroutine for
// a session. state.go answers kwatch vm down and status.
package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
)

const (
	// How often the owner looks at a managed VM's process.
	checkEvery = time.Second
	// How often a running managed VM's SSH server is checked, and how long it
	// may stay silent before the VM counts as dead: a guest whose sshd died
	// or that hangs is restarted rather than waited for forever.
	probeEvery   = 5 * time.Second
	sshDeadAfter = 20 * time.Second
	// cleanupTimeout bounds the removal of this run's uploads at exit.
	cleanupTimeout = 5 * time.Second
)

// Config says which machine to own.
type Config struct {
	VM          *vm.Process // nil when the machine is not kwatch's (--vm ssh)
	SSH         ssh.Config  // Addr is taken from the VM's state when VM is set
	BootTimeout time.Duration
	// Report is told of notices, errors and a guest that became ready, on
	// the owner goroutine, which waits for it: it must not call Session,
	// LogSession, Restart or Relaunch.
	Report event.Reporter
}

// Machine is the guest: a VM kwatch manages (Config.VM set) or an existing
// machine reached over SSH. Its methods are safe for concurrent use; the VM
// itself is only ever started, stopped or changed by the goroutine Start runs.
type Machine struct {
	reqs chan request
	stop context.CancelFunc
	done chan struct{}

	// What others may read while the owner works (a boot takes minutes).
	mu         sync.Mutex
	bootID     string
	pid        int // the managed VM's process that bootID runs in
	beforeBoot func()

	// Set by Open before anyone else sees the Machine; read-only afterwards.
	rebuild       func(context.Context, *Machine) error // Rebuild's work; nil: nothing to rebuild
	knownHosts    string                                // where Connect pins a host key
	acceptHostKey string                                // the fingerprint Connect accepts unasked
	stderr        io.Writer                             // where Connect asks about an unknown host key

	// Owned by the goroutine in run.
	cfg     Config
	session *session
	silence silence
	bootErr error // why the managed VM last failed to boot; nil after a good boot
}

// request asks the owner for a session; restart first stops a managed VM,
// relaunch first swaps its Ident and Launch (a rebuilt nix VM), and log
// (LogSession) boots nothing after a failed boot.
type request struct {
	restart  bool
	relaunch *relaunch
	log      bool
	reply    chan reply
}

type relaunch struct {
	ident  string
	launch vm.Launcher
}

type reply struct {
	s   *session
	err error
}

var errClosed = errors.New("kwatch is stopping")

// Start runs the owner of the machine until ctx is done or Close is called.
// Nothing is booted until the first Session.
func Start(ctx context.Context, cfg Config) *Machine {
	return (&Machine{cfg: cfg}).start(ctx)
}

func (m *Machine) start(ctx context.Context) *Machine {
	ctx, m.stop = context.WithCancel(ctx)
	m.reqs, m.done = make(chan request), make(chan struct{})
	go m.run(ctx)
	return m
}

// Close removes this run's uploads from the guest and drops the SSH
// connection; a managed VM keeps running for the next run.
func (m *Machine) Close() {
	m.stop()
	<-m.done
}

// Session returns a connected session, booting or restarting a managed VM
// when it does not run.
func (m *Machine) Session(ctx context.Context) (guest.Session, error) {
	return m.ask(ctx, request{})
}

// LogSession is Session for the kernel log stream, which asks again every
// second: after a managed VM failed to boot (an unbootable configuration,
// say) it returns that failure rather than booting again each time, until
// a Session or Restart boots it.
func (m *Machine) LogSession(ctx context.Context) (guest.Session, error) {
	return m.ask(ctx, request{log: true})
}

// Restart stops a managed VM and boots it again: for a guest that oopsed.
// A guest that `kwatch gdb` holds stopped is not restarted: it only looks dead.
func (m *Machine) Restart(ctx context.Context) (guest.Session, error) {
	if m.cfg.VM != nil && m.cfg.VM.Debugged() {
		return nil, errors.New("the guest does not answer while kwatch gdb holds it stopped: continue it in gdb, then save again")
	}
	return m.ask(ctx, request{restart: true})
}

// Relaunch makes the next Session boot the managed VM anew, with launch, when
// its ident changed (the nix VM was rebuilt).
func (m *Machine) Relaunch(ctx context.Context, ident string, launch vm.Launcher) error {
	_, err := m.ask(ctx, request{relaunch: &relaunch{ident, launch}})
	return err
}

func (m *Machine) ask(ctx context.Context, r request) (guest.Session, error) {
	r.reply = make(chan reply, 1) // the owner never waits for a caller that gave up
	select {
	case m.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.done:
		return nil, errClosed
	}
	select {
	case a := <-r.reply:
		if a.s == nil {
			return nil, a.err
		}
		return a.s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Managed reports whether kwatch owns the VM.
func (m *Machine) Managed() bool { return m.cfg.VM != nil }

// Running reports whether the managed VM's process of the current boot runs;
// true when unmanaged. A VM the owner already booted again does not count.
func (m *Machine) Running() bool {
	if m.cfg.VM == nil {
		return true
	}
	st, running, _ := m.cfg.VM.Status()
	m.mu.Lock()
	defer m.mu.Unlock()
	return running && st.PID == m.pid
}

// BootID identifies the guest's current boot; it changes when the VM restarted
// (and with it the kernel log's sequence numbers).
func (m *Machine) BootID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bootID
}

// ConsoleLog is the managed VM's serial console log, "" when there is none.
func (m *Machine) ConsoleLog() string {
	if m.cfg.VM == nil {
		return ""
	}
	st, ok, _ := vm.ReadState(m.cfg.VM.StateDir)
	if !ok {
		return ""
	}
	return st.ConsoleLog
}

// BeforeBoot registers fn to run before a dead VM is booted again, which
// truncates its console log: the crash watcher reads the panic in it first.
// fn runs on the owner goroutine, which waits for it: it must not call
// Session, LogSession, Restart or Relaunch (they wait for the owner).
func (m *Machine) BeforeBoot(fn func()) {
	m.mu.Lock()
	m.beforeBoot = fn
	m.mu.Unlock()
}

// run is the owner: it alone boots, stops and reconnects the machine.
func (m *Machine) run(ctx context.Context) {
	defer close(m.done)
	defer m.leave()
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.reqs:
			if r.log && m.bootErr != nil {
				r.reply <- reply{nil, m.bootErr}
				continue
			}
			s, err := m.handle(ctx, r)
			r.reply <- reply{s, err}
		case <-tick.C:
			m.check(ctx)
		}
	}
}

func (m *Machine) handle(ctx context.Context, r request) (*session, error) {
	switch {
	case m.cfg.VM == nil:
	case r.restart:
		m.drop()
		if err := m.cfg.VM.Down(); err != nil {
			return nil, fmt.Errorf("restarting the VM: %w", err)
		}
	case r.relaunch != nil:
		if r.relaunch.ident != m.cfg.VM.Ident {
			m.notice("the VM's configuration changed: restarting it")
			// Up restarts a VM whose Ident differs.
			m.cfg.VM.Ident, m.cfg.VM.Launch = r.relaunch.ident, r.relaunch.launch
			m.leave() // a NixOS VM's /tmp is on its disk: take this run's uploads along
		}
		// The build goes on meanwhile; the next Session boots the VM.
		return nil, nil
	}
	return m.connect(ctx)
}

// check looks after a managed VM that was up: it boots one that died and
// restarts one whose SSH server stopped answering.
func (m *Machine) check(ctx context.Context) {
	if m.cfg.VM == nil || m.session == nil {
		return // nothing to look after: sessions are made when asked for
	}
	if _, running, _ := m.cfg.VM.Status(); running {
		m.probe(ctx)
		return
	}
	if _, err := m.connect(ctx); err != nil && ctx.Err() == nil {
		m.error(err)
	}
}

// probe restarts a running managed VM whose SSH server stopped answering.
func (m *Machine) probe(ctx context.Context) {
	// A guest stopped in `kwatch gdb` is silent, not dead.
	answering := func() bool { return m.cfg.VM.Answering() || m.cfg.VM.Debugged() }
	if !m.silence.dead(time.Now(), answering) {
		return
	}
	m.notice(fmt.Sprintf("the VM runs but its SSH server has not answered for %s: restarting the VM", sshDeadAfter))
	if _, err := m.handle(ctx, request{restart: true}); err != nil && ctx.Err() == nil {
		m.error(err)
	}
}

// silence follows a running VM's SSH server from probe to probe.
type silence struct {
	probed time.Time // the last probe
	since  time.Time // when the server stopped answering; zero while it answers
}

// dead probes the server with answering when a probe is due at now, and
// reports whether it has been silent for sshDeadAfter (then the count starts over).
func (s *silence) dead(now time.Time, answering func() bool) bool {
	if now.Sub(s.probed) < probeEvery {
		return false
	}
	s.probed = now
	switch {
	case answering():
		s.since = time.Time{}
	case s.since.IsZero():
		s.since = now
	case now.Sub(s.since) >= sshDeadAfter:
		s.since = time.Time{}
		return true
	}
	return false
}

// connect returns the session, booting a managed VM that does not run and
// dialling the guest when there is no connection.
func (m *Machine) connect(ctx context.Context) (_ *session, err error) {
	g := &m.cfg
	if g.VM != nil {
		defer func() {
			if ctx.Err() == nil {
				m.bootErr = err
			}
		}()
	}
	if m.session != nil {
		if g.VM == nil {
			return m.session, nil
		}
		if _, running, _ := g.VM.Status(); running {
			return m.session, nil
		}
		m.drop()
		m.mu.Lock()
		beforeBoot := m.beforeBoot
		m.mu.Unlock()
		if beforeBoot != nil {
			beforeBoot()
		}
		m.notice("the VM is gone; booting it again")
	}
	pid := 0
	if g.VM != nil {
		before, _, _ := g.VM.Status()
		st, err := g.VM.Up(ctx, g.BootTimeout)
		if err != nil {
			return nil, err
		}
		pid = st.PID
		g.SSH.Addr = fmt.Sprintf("127.0.0.1:%d", st.Port)
		// A NixOS VM booted afresh may come with a new host key (a new disk
		// image); kwatch started it, so the old pin is no proof of anything.
		// The qemu backend's key lives in the state dir and never changes.
		if st.PID != before.PID && g.VM.Kind == guest.Nix {
			if err := ssh.ForgetHost(g.SSH.KnownHosts, g.SSH.Addr); err != nil {
				return nil, err
			}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, g.BootTimeout)
	defer cancel()
	c, err := ssh.Dial(dctx, g.SSH)
	if err != nil {
		return nil, fmt.Errorf("connecting to the guest at %s: %w", g.SSH.Addr, err)
	}
	release, bootID, err := c.Identify(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	m.session = &session{Client: c, release: release, bootID: bootID}
	m.silence.since = time.Time{} // a new boot gets a fresh count
	m.mu.Lock()
	m.bootID, m.pid = bootID, pid
	m.mu.Unlock()
	g.Report.Report(event.Event{Type: event.KindVMReady, Time: time.Now(), Addr: g.SSH.Addr,
		Message: fmt.Sprintf("guest %s ready (ssh %s)", release, g.SSH.Addr)})
	return m.session, nil
}

// leave removes what this run uploaded and closes the connection; a managed
// VM keeps running for the next run.
func (m *Machine) leave() {
	if m.session != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		if err := m.session.RemoveUploads(ctx); err != nil {
			m.notice("cleaning up in the guest: " + err.Error())
		}
		cancel()
	}
	m.drop()
}

// drop closes the connection.
func (m *Machine) drop() {
	if m.session != nil {
		m.session.Close()
		m.session = nil
	}
}

func (m *Machine) notice(msg string) {
	event.Notice(m.cfg.Report, msg)
}

func (m *Machine) error(err error) {
	event.Error(m.cfg.Report, err)
}

// session is a connection to one boot of the guest: guest.Session on top of
// ssh.Client, which answers the rest.
type session struct {
	*ssh.Client
	release, bootID string
}

func (s *session) Release() string { return s.release }
func (s *session) BootID() string  { return s.bootID }

func (s *session) LoadDeps(ctx context.Context, depends, softPre []string) ([]string, error) {
	return s.Client.LoadDeps(ctx, s.release, depends, softPre)
}

package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Config says how to reach a guest's SSH server.
type Config struct {
	Addr    string // host:port
	User    string // "" = root
	Signers []xssh.Signer
	// KnownHosts is the path of kwatch's known_hosts file, where accepted
	// host keys are pinned. A changed key is always refused.
	KnownHosts string
	// UserKnownHosts are more known_hosts files to trust (~/.ssh/known_hosts),
	// read but never written; missing ones are skipped.
	UserKnownHosts []string
	// TrustNew pins a host key seen for the first time without asking: only
	// for a VM kwatch started itself. Otherwise an unknown key fails Dial with
	// an *UnknownHostKeyError; PinHostKey accepts it.
	TrustNew bool
	// HostKeys, when set, are the only host keys the guest may present (a
	// VM whose keys kwatch made itself); known_hosts is then not used.
	HostKeys []xssh.PublicKey
	Timeout  time.Duration // per dial attempt (TCP connect and SSH handshake); 0 = 10s
	// UploadRecord, when set, is a file on the host that names the upload
	// directory and its files while they exist in the guest, so that the
	// next run removes what a run killed before RemoveUploads left there.
	UploadRecord string
	// Notify, when set, is told what a connection waits for once that
	// takes longer than waitNotice. It is called on the goroutine of the
	// call that dials (Dial, or any method finding the connection dead),
	// at most once per dial, while other callers wait for that dial: it
	// must return soon and must not call the Client.
	Notify func(msg string)
}

const (
	defaultDialTimeout = 10 * time.Second
	minBackoff         = 100 * time.Millisecond
	maxBackoff         = 2 * time.Second
	// A guest under TCG can stall for seconds while busy, so a connection is
	// declared dead only after several keepalives in a row went unanswered.
	keepaliveInterval = 5 * time.Second
	keepaliveMissed   = 3
	// How long a cancelled session gets to end before its connection is dropped.
	killGrace = 2 * time.Second
	// How long dialling may take before Notify is told what it waits for.
	waitNotice = 5 * time.Second
)

// Client is one persistent SSH connection to a guest. When a call finds the
// connection dead (dropped by the guest, or keepalives unanswered) it dials
// again with backoff until its context is done. Safe for concurrent use.
//
// Its state is in four parts, each with its own lock, so that an upload and a
// script in the kept shell do not wait for each other. Locks nest in one
// order only: sftpMu or shellMu (held for a whole upload or script), then
// dirMu (taken under sftpMu, held for the SFTP calls on the directory), then
// the dialing slot (connect, under sftpMu or shellMu or none), then mu.
type Client struct {
	// Set by Dial and never changed.
	cfg    Config
	config *xssh.ClientConfig
	// closing is cancelled by Close, so a caller still dialling (a guest
	// that stopped answering) gives up instead of retrying forever.
	closing context.Context
	cancel  context.CancelFunc

	// The connection. dialing is a one-slot lock held for a whole dial
	// (seconds, or minutes for a booting guest), so that one caller dials
	// and the others wait for it; mu guards the fields below it and is
	// never held while dialling or doing I/O.
	dialing   chan struct{}
	mu        sync.Mutex
	conn      *xssh.Client // nil while disconnected
	closed    bool
	connected bool // a connection succeeded once

	// sftpMu guards the connection's SFTP session, kept between uploads
	// (see sftp), for as long as one upload runs.
	sftpMu      sync.Mutex
	sftpc       *sftp.Client
	sftpConn    *xssh.Client // the connection sftpc runs on
	sftpSession *xssh.Session

	// shellMu guards the kept shell for kwatch's own scripts (see script),
	// for as long as one script runs: scripts take turns.
	shellMu sync.Mutex
	shell   *keptShell

	// dirMu guards the private upload directory (see Upload), its owner and
	// what Upload put there; recordRead: an earlier run's UploadRecord was
	// dealt with.
	dirMu      sync.Mutex
	dir        string
	dirUID     uint32
	files      map[string]bool
	recordRead bool
}

// Dial connects to cfg.Addr, retrying until the server answers or ctx is
// done: give ctx a deadline to wait for a booting guest. What retrying cannot
// help fails at once: a refused host key or login, a corrupt known_hosts, an
// unknown host name, a port that refuses every connection.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.KnownHosts == "" && len(cfg.HostKeys) == 0 {
		return nil, errors.New("connecting to the guest: no known_hosts file given")
	}
	if cfg.User == "" {
		cfg.User = "root"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultDialTimeout
	}
	c := &Client{cfg: cfg, dialing: make(chan struct{}, 1)}
	c.closing, c.cancel = context.WithCancel(context.Background())
	c.config = &xssh.ClientConfig{
		User:              cfg.User,
		Auth:              []xssh.AuthMethod{xssh.PublicKeys(cfg.Signers...)},
		HostKeyCallback:   c.checkHostKey,
		HostKeyAlgorithms: c.hostKeyAlgorithms(),
	}
	if _, err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection. Calls made afterwards fail.
func (c *Client) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.conn, c.closed = nil, true
	c.mu.Unlock()
	c.cancel()
	if c.shellMu.TryLock() { // else a script is running: the closed connection ends it
		c.endShell()
		c.shellMu.Unlock()
	}
	if conn == nil {
		return nil
	}
	return conn.Close()
}

func (c *Client) who() string { return c.cfg.User + "@" + c.cfg.Addr }

// connect returns the live connection, dialling a new one if there is none.
func (c *Client) connect(ctx context.Context) (*xssh.Client, error) {
	if conn, err := c.current(); conn != nil || err != nil {
		return conn, err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(c.closing, stop)()
	select {
	case c.dialing <- struct{}{}:
		defer func() { <-c.dialing }()
	case <-ctx.Done():
		return nil, fmt.Errorf("connecting to %s: %w", c.who(), ctx.Err())
	}
	// Another caller may have dialled while this one waited.
	if conn, err := c.current(); conn != nil || err != nil {
		return conn, err
	}
	conn, err := c.dial(ctx)
	if c.closing.Err() != nil {
		err = errClosed
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, errClosed
	}
	c.conn, c.connected = conn, true
	go c.watch(conn)
	return conn, nil
}

var errClosed = errors.New("ssh connection to the guest was closed")

func (c *Client) current() (*xssh.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	return c.conn, nil
}

// drop forgets conn if it is still the current connection, and closes it.
func (c *Client) drop(conn *xssh.Client) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	c.mu.Unlock()
	conn.Close()
}

// watch sends keepalives on conn and drops it once the guest stops answering
// them or the connection ends. Without keepalives a frozen guest would go
// unnoticed: QEMU's user-mode network keeps the TCP connection open.
func (c *Client) watch(conn *xssh.Client) {
	gone := make(chan struct{})
	go func() {
		conn.Wait()
		close(gone)
	}()
	defer c.drop(conn)
	for missed := 0; missed < keepaliveMissed; {
		answered := make(chan error, 1)
		go func() {
			// Servers answer an unknown global request with a failure, which is an answer all the same.
			_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		tick := time.NewTimer(keepaliveInterval)
		select {
		case <-gone:
			tick.Stop()
			return
		case <-tick.C:
			missed++
		case err := <-answered:
			if err != nil {
				tick.Stop()
				return
			}
			missed = 0
			select {
			case <-gone:
				tick.Stop()
				return
			case <-tick.C:
			}
		}
	}
}

// dial makes one connection, retrying with backoff until ctx is done.
func (c *Client) dial(ctx context.Context) (*xssh.Client, error) {
	var last error
	gaveUp := func() error {
		if last == nil {
			return fmt.Errorf("connecting to %s: %w", c.who(), ctx.Err())
		}
		return fmt.Errorf("connecting to %s: %w (last attempt: %w)", c.who(), ctx.Err(), last)
	}
	c.mu.Lock()
	firstContact := !c.connected
	c.mu.Unlock()
	start, notified, onlyRefusals := time.Now(), false, true
	for wait := minBackoff; ; wait = min(2*wait, maxBackoff) {
		conn, err := c.dialOnce(ctx)
		onlyRefusals = onlyRefusals && errors.Is(err, syscall.ECONNREFUSED)
		switch {
		case err == nil:
			return conn, nil
		case ctx.Err() != nil:
			return nil, gaveUp()
		case refused(err):
			return nil, fmt.Errorf("connecting to %s: %w", c.who(), err)
		case firstContact && onlyRefusals:
			// A guest kwatch boots accepts connections before its sshd runs
			// (QEMU's user network does), so a port that never accepted one
			// is a wrong address, not a slow guest.
			return nil, fmt.Errorf("connecting to %s: %w: is the address right and its SSH server running?", c.who(), err)
		case isNotFound(err):
			return nil, fmt.Errorf("connecting to %s: %w", c.who(), err)
		}
		last = err
		if !notified && c.cfg.Notify != nil && time.Since(start) > waitNotice {
			c.cfg.Notify(fmt.Sprintf("waiting for the SSH server of %s (%v)", c.who(), err))
			notified = true
		}
		select {
		case <-ctx.Done():
			return nil, gaveUp()
		case <-time.After(wait):
		}
	}
}

// refused reports whether the server answered but will not let us in, or
// kwatch's own known_hosts is broken, so that dialling again cannot help.
func refused(err error) bool {
	var changed *hostKeyChangedError
	var unknown *UnknownHostKeyError
	var broken *knownHostsError
	return errors.As(err, &changed) || errors.As(err, &unknown) || errors.As(err, &broken) || strings.Contains(err.Error(), "ssh: unable to authenticate")
}

// isNotFound reports whether the host name does not resolve.
func isNotFound(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound
}

// knownHostsError is a known_hosts file kwatch cannot read or parse.
type knownHostsError struct{ err error }

func (e *knownHostsError) Error() string {
	// knownhosts' errors name the file and line already, and may quote
	// the line: one with control characters is shown escaped, on one line.
	msg := e.err.Error()
	if !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
		msg = strconv.Quote(msg)
	}
	return fmt.Sprintf("reading known_hosts: %s (fix or delete that line)", msg)
}

func (c *Client) dialOnce(ctx context.Context) (*xssh.Client, error) {
	d := net.Dialer{Timeout: c.cfg.Timeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	// The handshake has no context of its own: bound it by the attempt's
	// timeout, and by ctx through an immediate deadline.
	nc.SetDeadline(time.Now().Add(c.cfg.Timeout))
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	sc, chans, reqs, err := xssh.NewClientConn(nc, c.cfg.Addr, c.config)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return xssh.NewClient(sc, chans, reqs), nil
}

// ForgetHost removes the host key pinned for addr ("host:port") from the
// known_hosts file, for a guest kwatch itself recreated with a new key.
func ForgetHost(knownHosts, addr string) error {
	b, err := os.ReadFile(knownHosts)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", knownHosts, err)
	}
	host := knownhosts.Normalize(addr)
	var keep []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == host {
			continue
		}
		keep = append(keep, l)
	}
	if err := os.WriteFile(knownHosts, []byte(strings.Join(keep, "")), 0o600); err != nil {
		return fmt.Errorf("forgetting the host key of %s: %w", addr, err)
	}
	return nil
}

// session opens a session on the connection. If that fails because the
// connection died since its last use, it dials again and retries once.
// It returns the connection too, for cancelSession.
func (c *Client) session(ctx context.Context) (*xssh.Session, *xssh.Client, error) {
	for retried := false; ; retried = true {
		conn, err := c.connect(ctx)
		if err != nil {
			return nil, nil, err
		}
		s, err := newSession(ctx, conn)
		if err == nil {
			return s, conn, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		err = fmt.Errorf("opening ssh session on %s: %w", c.who(), err)
		var rejected *xssh.OpenChannelError
		if errors.As(err, &rejected) {
			return nil, nil, err // refused over a working connection (OpenSSH's MaxSessions, say)
		}
		c.drop(conn) // it died since its last use
		if retried {
			return nil, nil, err
		}
	}
}

// cancelSession ends session s when ctx is done: SIGTERM to the remote
// command, and close. A server may ignore both (no signal support, a frozen
// guest, or a command that neither reads nor writes keeps dropbear waiting),
// so after killGrace the whole connection is dropped: nothing else unblocks
// the session's readers. Call the returned stop once done with s; it
// reports whether ctx's end reached s, and returns after that is over.
func (c *Client) cancelSession(ctx context.Context, conn *xssh.Client, s *xssh.Session) (stop func() bool) {
	done, ended := make(chan struct{}), make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(ended)
		s.Signal(xssh.SIGTERM)
		s.Close()
		select {
		case <-done:
		case <-time.After(killGrace):
			c.drop(conn)
		}
	})
	return func() bool {
		close(done)
		if stopAfter() {
			return false
		}
		<-ended
		return true
	}
}

// newSession is conn.NewSession that gives up when ctx is done: a frozen
// guest never answers the request.
func newSession(ctx context.Context, conn *xssh.Client) (*xssh.Session, error) {
	type result struct {
		s   *xssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := conn.NewSession()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Run runs cmd with the guest user's shell (busybox ash or bash: keep it
// POSIX sh) and returns its output and exit status. A non-zero exit status
// is not an error; err is for failures to reach the guest or run at all.
func (c *Client) Run(ctx context.Context, cmd string) (stdout, stderr []byte, exit int, err error) {
	var out, errOut bytes.Buffer
	exit, err = c.RunStream(ctx, cmd, &out, &errOut)
	return out.Bytes(), errOut.Bytes(), exit, err
}

// RunStream is Run with the output copied to stdout and stderr as it comes.
// When ctx is done the command is killed, with every process it started, and
// RunStream returns ctx.Err(). stdout and stderr are written from two
// goroutines of x/crypto/ssh, maybe at once (a writer both share must lock),
// and never after RunStream returned.
func (c *Client) RunStream(ctx context.Context, cmd string, stdout, stderr io.Writer) (exit int, err error) {
	s, conn, err := c.start(ctx, cmd, stdout, stderr)
	if err != nil {
		return -1, err
	}
	defer s.Close()
	stop := c.cancelSession(ctx, conn, s)
	err = s.Wait()
	stop()
	if err != nil && ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var exitErr *xssh.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitStatus(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("running %q on %s: %w", cmd, c.who(), err)
	}
	return 0, nil
}

// start starts cmd in a new session. A command whose start failed never ran,
// so after a connection that died under it (a loaded guest fresh from boot
// drops one now and then) it is started once more on a new connection.
func (c *Client) start(ctx context.Context, cmd string, stdout, stderr io.Writer) (*xssh.Session, *xssh.Client, error) {
	for try := 0; ; try++ {
		s, conn, err := c.session(ctx)
		if err != nil {
			return nil, nil, err
		}
		s.Stdout, s.Stderr = stdout, stderr
		err = s.Start(killable(cmd))
		if err == nil {
			return s, conn, nil
		}
		s.Close()
		if try == 1 || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("starting %q on %s: %w", cmd, c.who(), err)
		}
		c.drop(conn)
	}
}

// killable wraps cmd so that SIGTERM kills it with all its processes: the
// wrapper shell kills its process group, which is exactly the command's, as
// SSH servers start each command as a session leader. A shell runs traps
// only between foreground commands, hence the background job and wait.
func killable(cmd string) string {
	return "trap 'kill -9 0' TERM\n(\n" + cmd + "\n) &\nwait $!"
}

// Quote quotes s for a POSIX shell. Every argument of a remote command goes
// through it.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"kwatch/guest/vm"
	"kwatch/proc"
)

// sshd is a real dropbear on 127.0.0.1, the stand-in for a guest. It runs
// in its own mount namespace with a temporary directory bound over /root, so
// it reads the test's authorized_keys without touching the real ones.
type sshd struct {
	t    *testing.T
	addr string
	home string
	stop func()
	pid  int
}

// newSSHD starts a dropbear that accepts signer's key and returns it with an
// Config for it.
func newSSHD(t *testing.T) (*sshd, Config) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real sshd (dropbear)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the dropbear fixture needs root (for unshare and mount)")
	}
	for _, bin := range []string{"dropbear", "dropbearkey", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("the dropbear fixture needs %s", bin)
		}
	}
	dir := t.TempDir()
	signer, authorized, err := LoadOrCreateKey(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	d := &sshd{t: t, addr: freeAddr(t), home: filepath.Join(dir, "home")}
	if err := os.MkdirAll(filepath.Join(d.home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.home, ".ssh", "authorized_keys"), authorized, 0o600); err != nil {
		t.Fatal(err)
	}
	d.start(d.hostKey("a"))
	return d, Config{
		Addr:       d.addr,
		Signers:    []xssh.Signer{signer},
		KnownHosts: filepath.Join(dir, "state", "known_hosts"),
		TrustNew:   true,
		Timeout:    5 * time.Second,
	}
}

// startProc starts cmd in its own process group and kills the group when the
// test ends. It returns a function that does the same at once.
func startProc(t *testing.T, cmd *exec.Cmd) (stop func()) {
	t.Helper()
	if err := proc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	// Reap cmd concurrently: a zombie leader would keep its group alive for KillGroup.
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			proc.KillGroup(cmd.Process.Pid, time.Second)
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// hostKey returns the path of ed25519 host key name, generating it on first use.
func (d *sshd) hostKey(name string) string { return d.typedHostKey(name, "ed25519") }

// typedHostKey returns the path of host key name of type typ (a dropbearkey
// -t), generating it on first use.
func (d *sshd) typedHostKey(name, typ string) string {
	path := filepath.Join(d.home, "..", "hostkey-"+name)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if out, err := exec.Command("dropbearkey", "-t", typ, "-f", path).CombinedOutput(); err != nil {
		d.t.Fatalf("dropbearkey: %v\n%s", err, out)
	}
	return path
}

// start runs dropbear with hostKeys and waits until it accepts connections.
func (d *sshd) start(hostKeys ...string) {
	d.t.Helper()
	var log bytes.Buffer
	args := []string{"-m", "sh", "-c", `mount --bind "$1" /root && p=$2 && shift 2 && exec dropbear -F -E -s -g -p "$p" "$@"`, "sh", d.home, d.addr}
	for _, k := range hostKeys {
		args = append(args, "-r", k)
	}
	cmd := exec.Command("unshare", args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	stopGroup := startProc(d.t, cmd)
	d.pid = cmd.Process.Pid
	// dropbear puts each connection in a session of its own, out of the
	// group: kill those too, or clients would stay connected.
	d.stop = func() {
		for _, pid := range descendants(d.pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		stopGroup()
	}
	d.t.Cleanup(d.stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", d.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) || !proc.Alive(d.pid) {
			d.t.Fatalf("dropbear did not start:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops dropbear, with every connection it has, and starts it again
// with hostKeys.
func (d *sshd) restart(hostKeys ...string) {
	d.t.Helper()
	d.stop()
	d.start(hostKeys...)
}

// descendants lists pid's children, grandchildren and so on.
func descendants(pid int) []int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	var all []int
	for _, f := range strings.Fields(string(b)) {
		child, _ := strconv.Atoi(f)
		all = append(all, child)
		all = append(all, descendants(child)...)
	}
	return all
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRun(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	tests := []struct {
		cmd            string
		stdout, stderr string
		exit           int
	}{
		{"true", "", "", 0},
		{"echo out; echo err >&2; exit 7", "out\n", "err\n", 7},
		{"printf 'a\\nb'", "a\nb", "", 0},
		{"kill -9 $$", "", "", 128 + 9},
		{"cat", "", "", 0}, // stdin is empty: a command reading it must not hang
		{"no-such-command-kwatch", "", "no-such-command-kwatch: command not found", 127},
	}
	for _, tt := range tests {
		stdout, stderr, exit, err := c.Run(ctx, tt.cmd)
		if err != nil {
			t.Fatalf("Run(%q): %v", tt.cmd, err)
		}
		if string(stdout) != tt.stdout || !strings.Contains(string(stderr), tt.stderr) || exit != tt.exit {
			t.Errorf("Run(%q) = %q, %q, %d; want %q, %q, %d", tt.cmd, stdout, stderr, exit, tt.stdout, tt.stderr, tt.exit)
		}
	}
}

func TestRunConcurrent(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			want := strconv.Itoa(i)
			stdout, _, exit, err := c.Run(ctx, "sleep 0.2; echo "+want)
			if err != nil || exit != 0 || strings.TrimSpace(string(stdout)) != want {
				t.Errorf("Run %d = %q, %d, %v", i, stdout, exit, err)
			}
		})
	}
	wg.Wait()
}

func TestRunStreamCancel(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx, cancel := context.WithCancel(testContext(t))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	result := make(chan error, 1)
	go func() {
		_, err := c.RunStream(ctx, "echo started; sleep 4711; echo never", pw, os.Stderr)
		pw.Close()
		result <- err
	}()
	line := make([]byte, len("started\n"))
	if _, err := pr.Read(line); err != nil || string(line) != "started\n" {
		t.Fatalf("reading the command's output: %q, %v", line, err)
	}
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Errorf("RunStream after cancel: error %v, want context.Canceled", err)
	}
	// The remote command must not outlive the cancelled call.
	stdout, _, _, err := c.Run(testContext(t), "for i in $(seq 50); do pgrep -x -f 'sleep 4711' || exit 0; sleep 0.1; done; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	if len(stdout) > 0 {
		t.Errorf("the remote command still runs after RunStream was cancelled (pids %s)", stdout)
	}
}

func TestQuote(t *testing.T) {
	nasty := []string{
		"",
		"plain",
		"a b",
		"it's",
		"''",
		`"double" and \backslash\`,
		"$HOME $(id) `id` ${x:-y}",
		"semi; colon && amp | pipe > redirect < in",
		"*?[a-z] ~ # comment",
		"new\nline\ttab",
		"-n",
		"-e \\n",
		"%s %d %%",
		"unicode: café ✓",
		"!bang !! ^caret",
	}
	for _, s := range nasty {
		q := Quote(s)
		if strings.ContainsAny(s, " '\"\\$`;&|<>*?[~#\n\t!") && !strings.HasPrefix(q, "'") {
			t.Errorf("Quote(%q) = %q, want it single-quoted", s, q)
		}
	}

	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	shells := []string{"bash", "dash", "busybox sh"}
	for _, s := range nasty {
		// Through the login shell directly, then nested through each shell,
		// which quotes the quoted command once more.
		cmds := []string{"printf %s " + Quote(s)}
		for _, sh := range shells {
			cmds = append(cmds, sh+" -c "+Quote("printf %s "+Quote(s)))
		}
		for _, cmd := range cmds {
			stdout, stderr, exit, err := c.Run(ctx, cmd)
			if err != nil || exit != 0 || string(stdout) != s {
				t.Errorf("Run(%q) = %q (stderr %q, exit %d, err %v), want %q", cmd, stdout, stderr, exit, err, s)
			}
		}
	}
}

func TestHostKeyPinning(t *testing.T) {
	d, cfg := newSSHD(t)
	c := dial(t, cfg)
	c.Close()
	pinned, err := os.ReadFile(cfg.KnownHosts)
	if err != nil {
		t.Fatalf("known_hosts not written: %v", err)
	}
	if n := strings.Count(string(pinned), "\n"); n != 1 || !strings.Contains(string(pinned), "ssh-ed25519") {
		t.Fatalf("known_hosts after the first connection:\n%s\nwant one ssh-ed25519 line", pinned)
	}

	// The same key again: accepted, nothing added.
	dial(t, cfg).Close()
	if again, _ := os.ReadFile(cfg.KnownHosts); !bytes.Equal(again, pinned) {
		t.Errorf("known_hosts changed on a second connection:\n%s", again)
	}

	// Another key on the same address: refused at once, naming the file.
	d.restart(d.hostKey("b"))
	ctx := testContext(t)
	_, err = Dial(ctx, cfg)
	if err == nil {
		t.Fatal("Dial accepted a changed host key")
	}
	if !strings.Contains(err.Error(), cfg.KnownHosts) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Dial error %q, want one line naming %s", err, cfg.KnownHosts)
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial kept retrying a changed host key until the deadline: %v", err)
	}
	if after, _ := os.ReadFile(cfg.KnownHosts); !bytes.Equal(after, pinned) {
		t.Errorf("known_hosts changed after a refused key:\n%s", after)
	}
}

// publicKey reads the public half of dropbear host key name.
func (d *sshd) publicKey(name string) xssh.PublicKey {
	d.t.Helper()
	out, err := exec.Command("dropbearkey", "-y", "-f", d.hostKey(name)).Output()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if k, _, _, _, err := xssh.ParseAuthorizedKey([]byte(l)); err == nil {
			return k
		}
	}
	d.t.Fatalf("no public key in dropbearkey's output:\n%s", out)
	return nil
}

// Without TrustNew an unknown host key is refused at once, naming its
// fingerprint; once pinned it is accepted. Keys in the user's known_hosts
// count too, and that file is never written.
func TestUnknownHostKey(t *testing.T) {
	d, cfg := newSSHD(t)
	cfg.TrustNew = false
	ctx := testContext(t)
	_, err := Dial(ctx, cfg)
	var unknown *UnknownHostKeyError
	if !errors.As(err, &unknown) || ctx.Err() != nil {
		t.Fatalf("Dial with an unknown host key: %v; want an UnknownHostKeyError at once", err)
	}
	fp := xssh.FingerprintSHA256(d.publicKey("a"))
	if !strings.Contains(err.Error(), fp) || unknown.Addr != cfg.Addr {
		t.Errorf("error %q (addr %s), want the fingerprint %s and the address %s", err, unknown.Addr, fp, cfg.Addr)
	}
	if _, err := os.Stat(cfg.KnownHosts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an unknown key was written to known_hosts: %v", err)
	}
	if err := PinHostKey(cfg.KnownHosts, unknown.Addr, unknown.Key); err != nil {
		t.Fatal(err)
	}
	dial(t, cfg).Close()

	// The user's known_hosts (a hashed entry, as Debian's ssh writes them) is enough.
	user := filepath.Join(t.TempDir(), "known_hosts")
	host := knownhosts.HashHostname(knownhosts.Normalize(cfg.Addr))
	writeFile(t, user, "# mine\n"+knownhosts.Line([]string{host}, d.publicKey("a"))+"\n")
	os.Remove(cfg.KnownHosts)
	cfg.UserKnownHosts = []string{filepath.Join(t.TempDir(), "missing"), user}
	dial(t, cfg).Close()
	if _, err := os.Stat(cfg.KnownHosts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kwatch's known_hosts was written for a key the user's file has: %v", err)
	}

	// A host with keys of two types, known by the one kwatch prefers less:
	// that one is asked for, as OpenSSH does, not the other refused as changed.
	ecdsa := d.typedHostKey("ecdsa", "ecdsa")
	d.restart(d.hostKey("a"), ecdsa)
	writeFile(t, user, knownhosts.Line([]string{knownhosts.Normalize(cfg.Addr)}, d.publicKey("ecdsa"))+"\n")
	dial(t, cfg).Close()

	// A changed key is refused, naming the user's file and line, even with TrustNew.
	writeFile(t, user, "# mine\n"+knownhosts.Line([]string{host}, d.publicKey("a"))+"\n")
	cfg.TrustNew = true
	d.restart(d.hostKey("b"))
	_, err = Dial(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), user) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Dial with a key that changed from the user's known_hosts: %v; want a refusal naming %s line 2", err, user)
	}
}

func TestDialRefusedLogin(t *testing.T) {
	_, cfg := newSSHD(t)
	stranger, _, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Signers = []xssh.Signer{stranger}
	ctx := testContext(t)
	if _, err := Dial(ctx, cfg); err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("Dial with a key the server does not accept: error %v, want an immediate authentication error", err)
	}
}

func TestDialWaitsForServer(t *testing.T) {
	d, cfg := newSSHD(t)
	d.stop()
	// Until the guest's sshd runs, QEMU's user network accepts connections
	// and drops them.
	stopEarly := acceptAndClose(t, cfg.Addr)
	done := make(chan error, 1)
	go func() {
		c, err := Dial(testContext(t), cfg)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	// Let Dial fail a few times before the server comes up.
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Dial returned before the server started: %v", err)
	default:
	}
	stopEarly()
	d.start(d.hostKey("a"))
	if err := <-done; err != nil {
		t.Errorf("Dial after the server came up: %v", err)
	}
}

// acceptAndClose listens on addr and drops every connection at once, as
// QEMU's user network does before the guest listens. stop closes it.
func acceptAndClose(t *testing.T, addr string) (stop func()) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { l.Close() }) }
	t.Cleanup(stop)
	return stop
}

// A server that never lets the handshake through is waited for until the
// deadline, and after waitNotice Notify says what the wait is for.
func TestDialDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a dial deadline")
	}
	addr := freeAddr(t)
	acceptAndClose(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), waitNotice+2*time.Second)
	defer cancel()
	var notices []string
	_, err := Dial(ctx, Config{Addr: addr, KnownHosts: filepath.Join(t.TempDir(), "known_hosts"),
		Notify: func(msg string) { notices = append(notices, msg) }})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last attempt") {
		t.Errorf("Dial to a server that drops every connection: error %v, want the deadline and the last attempt's error", err)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "waiting for the SSH server of root@"+addr) {
		t.Errorf("notices %q, want one saying what Dial waits for", notices)
	}
}

// What retrying cannot mend fails at once, in one line saying what to fix.
func TestDialPermanentErrors(t *testing.T) {
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, []byte("[127.0.0.1]:22 ssh-ed25519 not-base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing listens", Config{Addr: freeAddr(t), KnownHosts: known}, "is the address right"},
		{"unknown host", Config{Addr: "no-such-host.invalid:22", KnownHosts: known}, "no-such-host.invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			_, err := Dial(ctx, tc.cfg)
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Dial = %v; want an immediate one-line error mentioning %q", err, tc.want)
			}
		})
	}
}

// A corrupt known_hosts line is reported at once, naming the file.
func TestDialCorruptKnownHosts(t *testing.T) {
	_, cfg := newSSHD(t)
	if err := os.WriteFile(cfg.KnownHosts, []byte("[127.0.0.1]:22 ssh-ed25519 not-base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	_, err := Dial(ctx, cfg)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), cfg.KnownHosts) || !strings.Contains(err.Error(), "fix or delete") {
		t.Errorf("Dial with a corrupt known_hosts = %v; want an immediate error naming the file", err)
	}
}

// With HostKeys given, exactly those keys are accepted, and known_hosts is
// neither read nor written: a VM kwatch made the keys for needs no pin per port.
func TestDialExpectedHostKeys(t *testing.T) {
	d, cfg := newSSHD(t)
	state := filepath.Join(t.TempDir(), "state")
	hostKey, err := vm.EnsureHostKey(state)
	if err != nil {
		t.Fatal(err)
	}
	d.restart(hostKey)
	if cfg.HostKeys, err = vm.HostPublicKeys(state); err != nil {
		t.Fatal(err)
	}
	dial(t, cfg).Close()
	if _, err := os.Stat(cfg.KnownHosts); err == nil {
		t.Error("known_hosts was written although the host keys were given")
	}
	d.restart(d.hostKey("b"))
	ctx := testContext(t)
	if _, err := Dial(ctx, cfg); err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "other than the one kwatch made") {
		t.Errorf("Dial to a server with another host key = %v; want an immediate refusal", err)
	}
}

func TestReconnect(t *testing.T) {
	d, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	if _, _, _, err := c.Run(ctx, "true"); err != nil {
		t.Fatal(err)
	}

	d.stop()
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, _, _, err := c.Run(short, "true"); err == nil {
		t.Fatal("Run succeeded with the server gone")
	}

	d.start(d.hostKey("a"))
	stdout, _, exit, err := c.Run(ctx, "echo back")
	if err != nil || exit != 0 || string(stdout) != "back\n" {
		t.Errorf("Run after the server restarted = %q, %d, %v; want it to reconnect", stdout, exit, err)
	}
}

// TestKeepalive freezes the server side of the connection, as a hung guest
// behind QEMU's still-open TCP forwarding would be. Only keepalives can tell
// the connection is dead; Run must then go on over a new connection.
func TestKeepalive(t *testing.T) {
	d, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	if _, _, _, err := c.Run(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	frozen := descendants(d.pid)
	if len(frozen) == 0 {
		t.Fatal("found no dropbear process serving the connection")
	}
	for _, pid := range frozen {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	stdout, _, exit, err := c.Run(ctx, "echo alive")
	if err != nil || exit != 0 || string(stdout) != "alive\n" {
		t.Errorf("Run on a frozen connection = %q, %d, %v; want it to notice and reconnect", stdout, exit, err)
	}
}

func TestUpload(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	ctx := testContext(t)
	dir := t.TempDir()
	var (
		remote string
		first  *sftp.Client
	)
	for i, size := range []int{3 << 20, 1000} { // the second replaces the first
		local := filepath.Join(dir, "hello.ko")
		content := bytes.Repeat([]byte{byte(i + 1), 2, 3, 4, 5, 6, 7}, size/7)
		if err := os.WriteFile(local, content, 0o644); err != nil {
			t.Fatal(err)
		}
		r, n, err := c.Upload(ctx, local, "hello.ko")
		if err != nil {
			t.Fatalf("Upload: %v", err)
		}
		if remote != "" && r != remote {
			t.Errorf("second upload went to %s, the first to %s", r, remote)
		}
		if i == 0 {
			first = c.sftpc
		} else if c.sftpc != first {
			t.Error("the second upload started a new SFTP session: uploads keep the connection's one")
		}
		remote = r
		if n != int64(len(content)) {
			t.Errorf("Upload reported %d bytes, want %d", n, len(content))
		}
		got, err := os.ReadFile(remote) // the server shares the host's /tmp
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("upload %d: remote file has %d bytes (err %v), want the %d bytes sent", i, len(got), err, len(content))
		}
	}
	fi, err := os.Lstat(filepath.Dir(remote))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("upload dir %s: %v, %v; want a root-owned directory of mode 0700", filepath.Dir(remote), fi.Mode(), err)
	}
	// A cancelled upload ends the kept SFTP session; the next one starts anew.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := c.Upload(cctx, filepath.Join(dir, "hello.ko"), "hello.ko"); err == nil {
		t.Error("an upload with a cancelled context succeeded")
	}
	if _, _, err := c.Upload(ctx, filepath.Join(dir, "hello.ko"), "hello.ko"); err != nil {
		t.Errorf("the upload after a cancelled one: %v", err)
	}
	for _, name := range []string{"missing.ko", "../x.ko"} {
		if _, _, err := c.Upload(ctx, filepath.Join(dir, name), name); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Upload of %s: error %v, want one naming it", name, err)
		}
	}

	// Something kwatch did not put there stays, and so does the dir.
	other := filepath.Join(filepath.Dir(remote), "other")
	writeFile(t, other, "not kwatch's")
	if err := c.RemoveUploads(ctx); err == nil {
		t.Error("RemoveUploads removed a dir holding a file kwatch did not make")
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("RemoveUploads removed a file kwatch did not make: %v", err)
	}
	os.Remove(other)
	if err := c.RemoveUploads(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Dir(remote)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload dir still there after RemoveUploads: %v", err)
	}

	// A dir lost since (a reboot cleaned /tmp) is made anew.
	r, _, err := c.Upload(ctx, filepath.Join(dir, "hello.ko"), "hello.ko")
	if err != nil || r == remote {
		t.Fatalf("Upload after RemoveUploads = %s, %v; want a new dir", r, err)
	}
	os.RemoveAll(filepath.Dir(r))
	r2, _, err := c.Upload(ctx, filepath.Join(dir, "hello.ko"), "hello.ko")
	if err != nil || r2 == r {
		t.Fatalf("Upload after its dir vanished = %s, %v; want a new dir", r2, err)
	}
	// A dir swapped for a link to one anybody can write to is refused.
	os.Remove(r2)
	os.Remove(filepath.Dir(r2))
	if err := os.Symlink(dir, filepath.Dir(r2)); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Dir(r2))
	if _, _, err := c.Upload(ctx, filepath.Join(dir, "hello.ko"), "hello.ko"); err == nil || !strings.Contains(err.Error(), "not kwatch's") {
		t.Errorf("Upload into a dir replaced by a symlink: %v, want a refusal", err)
	}
}

// A run that ends without RemoveUploads (kwatch killed) leaves its upload
// dir named in the record: the next run removes it, with only the files the
// record names, and only while it is still private to the same login.
func TestUploadRecord(t *testing.T) {
	_, cfg := newSSHD(t)
	cfg.UploadRecord = filepath.Join(t.TempDir(), "uploads.json")
	ctx := testContext(t)
	local := filepath.Join(t.TempDir(), "hello.ko")
	writeFile(t, local, "a module")
	// upload uploads with a new client and returns its upload dir, leaving
	// it behind as a killed kwatch does.
	upload := func() string {
		t.Helper()
		c := dial(t, cfg)
		remote, _, err := c.Upload(ctx, local, "hello.ko")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		dir := filepath.Dir(remote)
		t.Cleanup(func() { os.RemoveAll(dir) }) // some are left on purpose
		return dir
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }

	killed := upload()
	if b, err := os.ReadFile(cfg.UploadRecord); err != nil || !strings.Contains(string(b), killed) || !strings.Contains(string(b), `"hello.ko"`) {
		t.Fatalf("the record names %q (%v), want %s and hello.ko", b, err, killed)
	}
	next := upload()
	if exists(killed) || !exists(next) {
		t.Errorf("after the next run: the killed run's %s exists: %v, the new %s: %v", killed, exists(killed), next, exists(next))
	}

	// A file the record does not name keeps the dir, and is kept.
	writeFile(t, filepath.Join(next, "other"), "not kwatch's")
	third := upload()
	if !exists(filepath.Join(next, "other")) || !exists(next) || exists(filepath.Join(next, "hello.ko")) {
		t.Error("the recorded dir with a file kwatch did not make: want that file and the dir kept, hello.ko gone")
	}
	// A dir that is no longer private to the login is not touched.
	if err := os.Chmod(third, 0o777); err != nil {
		t.Fatal(err)
	}
	upload()
	if !exists(filepath.Join(third, "hello.ko")) {
		t.Error("the recorded dir, open to all now, lost hello.ko")
	}

	// A record naming another private dir (hand-edited, corrupt) removes
	// nothing: only a dir of mktemp's shape is kwatch's.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(victim, "hello.ko"), "someone's")
	writeFile(t, cfg.UploadRecord, fmt.Sprintf(`{"addr":%q,"user":"root","dir":%q,"uid":0,"files":["hello.ko"]}`, cfg.Addr, victim))
	upload()
	if !exists(filepath.Join(victim, "hello.ko")) {
		t.Error("a record naming a dir kwatch did not make removed a file in it")
	}

	// A record's uid is no proof: the dir must be private to this login
	// (id -u in the guest), not to whichever uid the record names.
	out, err := exec.Command("mktemp", "-d", "/tmp/kwatch.XXXXXXXX").Output()
	if err != nil {
		t.Fatal(err)
	}
	theirs := strings.TrimSpace(string(out))
	t.Cleanup(func() { os.RemoveAll(theirs) })
	writeFile(t, filepath.Join(theirs, "hello.ko"), "another user's")
	if err := os.Chown(theirs, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.UploadRecord, fmt.Sprintf(`{"addr":%q,"user":"root","dir":%q,"uid":1000,"files":["hello.ko"]}`, cfg.Addr, theirs))
	upload()
	if !exists(filepath.Join(theirs, "hello.ko")) {
		t.Error("a record naming another uid's private dir removed a file in it")
	}

	// A record naming a path beside a plain name is damaged: nothing of
	// it is removed, not even the plain name's file.
	left := upload()
	writeFile(t, cfg.UploadRecord, fmt.Sprintf(`{"addr":%q,"user":"root","dir":%q,"uid":0,"files":["hello.ko","../x"]}`, cfg.Addr, left))
	upload()
	if !exists(filepath.Join(left, "hello.ko")) {
		t.Error("a record naming ../x removed the file it names beside it")
	}

	// RemoveUploads removes the record with the dir.
	c := dial(t, cfg)
	if _, _, err := c.Upload(ctx, local, "hello.ko"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveUploads(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(cfg.UploadRecord) {
		t.Error("the record outlived RemoveUploads")
	}
}

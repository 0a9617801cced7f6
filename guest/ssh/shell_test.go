package ssh

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptOK runs script in the kept shell and fails the test on an error.
func scriptOK(t *testing.T, c *Client, script string) (string, int) {
	t.Helper()
	out, exit, err := c.script(testContext(t), script)
	if err != nil {
		t.Fatalf("script(%q): %v", script, err)
	}
	return string(out), exit
}

// Scripts in the kept shell give what Run gives (stdout and stderr
// together), one after another in the same shell, which outlives exit and
// exec in them.
func TestScript(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	shell, _ := scriptOK(t, c, "echo $$")
	tests := []struct {
		script string
		out    string
		exit   int
	}{
		{"true", "", 0},
		{"echo out; echo err >&2; exit 7", "out\nerr\n", 7},
		{"printf 'a\\nb'", "a\nb", 0},
		{"printf 'ends in two newlines\\n\\n'", "ends in two newlines\n\n", 0},
		{"exec sh -c 'exit 3'", "", 3},
		{"cat", "", 0}, // stdin is empty: a script reading it must not hang or eat the next one
		{"cd /; X=1; echo $X", "1\n", 0},
		{"echo ${X:-unset} $(pwd)", "unset " + mustPwd(t, c) + "\n", 0}, // the last script's state is gone
	}
	for _, tt := range tests {
		if out, exit := scriptOK(t, c, tt.script); out != tt.out || exit != tt.exit {
			t.Errorf("script(%q) = %q, %d; want %q, %d", tt.script, out, exit, tt.out, tt.exit)
		}
	}
	if again, _ := scriptOK(t, c, "echo $$"); again != shell {
		t.Errorf("the scripts ran in shells %q and %q: the shell was not kept", shell, again)
	}
}

func mustPwd(t *testing.T, c *Client) string {
	out, _, _, err := c.Run(testContext(t), "pwd")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// A script that hangs ends with its context, with all its processes; other
// scripts run meanwhile, and the next one gets a new shell.
func TestScriptCancel(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	shell, _ := scriptOK(t, c, "echo $$")
	ctx, cancel := context.WithCancel(testContext(t))
	result := make(chan error, 1)
	go func() {
		_, _, err := c.script(ctx, "sleep 4712 & sleep 4711; echo never")
		result <- err
	}()
	running := func() string {
		out, _, _, err := c.Run(testContext(t), "pgrep -f 'sleep 471[12]'")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(running(), "\n") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the hanging script never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The kept shell is busy: this one runs as a command of its own.
	if out, exit := scriptOK(t, c, "echo meanwhile"); out != "meanwhile\n" || exit != 0 {
		t.Errorf("a script while the kept shell is busy = %q, %d", out, exit)
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("script after cancel: error %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled script still waits")
	}
	for i := 0; running() != ""; i++ {
		if i == 50 {
			t.Fatalf("the cancelled script's processes still run (pids %s)", running())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if again, _ := scriptOK(t, c, "echo $$"); again == shell {
		t.Errorf("the shell of the cancelled script was kept")
	}
}

// A kept shell that ended between two scripts is replaced without an error.
func TestScriptShellEnded(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	shell, _ := scriptOK(t, c, "echo $$")
	if _, _, _, err := c.Run(testContext(t), "kill -9 "+strings.TrimSpace(shell)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if out, exit := scriptOK(t, c, "echo $$"); out == shell || exit != 0 {
		t.Errorf("after the kept shell was killed: %q, exit %d; want a new shell", out, exit)
	}
}

// A script that started is never run again, even when the kept shell dies
// under it: a second run could load a module twice.
func TestScriptNotRunTwice(t *testing.T) {
	_, cfg := newSSHD(t)
	c := dial(t, cfg)
	scriptOK(t, c, "true") // the shell is now a reused one
	runs := filepath.Join(t.TempDir(), "runs")
	if _, _, err := c.script(testContext(t), "echo run >>"+runs+"; kill -9 $$; sleep 1"); err == nil {
		t.Error("no error from a script whose shell was killed")
	}
	if b, err := os.ReadFile(runs); err != nil || string(b) != "run\n" {
		t.Errorf("the script ran %d times (%v), want once", strings.Count(string(b), "run"), err)
	}
}

// What the login shell prints before the kept shell starts (a .bashrc that
// greets, say) is not the first script's output.
func TestScriptIgnoresShellStartup(t *testing.T) {
	d, cfg := newSSHD(t)
	if err := os.WriteFile(filepath.Join(d.home, ".bashrc"), []byte("printf 'hello from bashrc'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := dial(t, cfg)
	if out, _, _, err := c.Run(testContext(t), "true"); err != nil || !strings.Contains(string(out), "hello from bashrc") {
		t.Skipf("the login shell does not read .bashrc here (%q, %v)", out, err)
	}
	if out, exit := scriptOK(t, c, "echo script"); out != "script\n" || exit != 0 {
		t.Errorf("the first script gave %q, exit %d; want only its own output", out, exit)
	}
}

// freezer is a TCP proxy to an SSH server that can stop passing the server's
// bytes to the client on the connections it has, as a guest that froze
// behind QEMU's still-open port forward would; new connections pass.
type freezer struct {
	addr   string
	mu     sync.Mutex
	frozen chan struct{} // closed to freeze the connections so far
}

func newFreezer(t *testing.T, server string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &freezer{addr: l.Addr().String(), frozen: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", server)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			f.mu.Lock()
			frozen := f.frozen
			f.mu.Unlock()
			go io.Copy(s, c)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					select {
					case <-frozen:
						return
					default:
					}
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return f
}

// freeze stops the server's bytes on the connections made so far.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.frozen)
	f.frozen = make(chan struct{})
}

// A script that may have started never runs again: here the guest froze
// (the connection passes nothing back) after the kept shell got the script,
// so not even the line saying it started came back. The keepalives drop the
// connection; the script must then fail, not run a second time.
func TestScriptNotRunTwiceAfterFreeze(t *testing.T) {
	_, cfg := newSSHD(t)
	f := newFreezer(t, cfg.Addr)
	cfg.Addr = f.addr
	c := dial(t, cfg)
	scriptOK(t, c, "true") // the shell is now a reused one
	runs := filepath.Join(t.TempDir(), "runs")
	f.freeze()
	out, exit, err := c.script(testContext(t), "echo run >>"+runs)
	b, _ := os.ReadFile(runs)
	if n := strings.Count(string(b), "run"); n > 1 {
		t.Fatalf("the script ran %d times", n)
	}
	// Either the script never reached the frozen shell and ran once in a
	// new one, or it failed: never both.
	if err == nil && (string(b) != "run\n" || len(out) != 0 || exit != 0) {
		t.Errorf("script = %q, %d, nil; ran %q", out, exit, b)
	}
}

package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"

	xssh "golang.org/x/crypto/ssh"
)

// keptShell is a shell kept open on the connection for kwatch's own short
// scripts (the reload, a log marker), as the SFTP session is kept for
// uploads. A command of its own costs a session, a fork in the
// SSH server and a shell started, about 20 ms of every reload under TCG; a
// script in the kept shell costs one fork. Users' commands and streams keep
// sessions of their own (Run): they may read stdin, change the shell's
// state or run for long.
type keptShell struct {
	conn  *xssh.Client
	s     *xssh.Session
	in    io.WriteCloser
	out   *bufio.Reader
	token string // ends each script's output; random, so no output forges it
	used  bool   // a script ran in it before
}

// script runs one of kwatch's own short POSIX sh scripts in the kept shell
// and returns its output (stdout and stderr together) and exit status. The
// script runs in a subshell, with the same ^C semantics as Run: ctx's end
// kills it with its processes. While the kept shell is busy (a script that
// hangs until its ctx ends) a script runs as a command of its own.
func (c *Client) script(ctx context.Context, script string) (out []byte, exit int, err error) {
	if !c.shellMu.TryLock() {
		out, _, exit, err := c.Run(ctx, "(\n"+script+"\n) 2>&1")
		return out, exit, err
	}
	defer c.shellMu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return nil, -1, err
		}
		conn, err := c.connect(ctx)
		if err != nil {
			return nil, -1, err
		}
		if c.shell != nil && c.shell.conn != conn {
			c.endShell()
		}
		if c.shell == nil {
			if err := c.startShell(ctx); err != nil {
				return nil, -1, err
			}
		}
		sh := c.shell
		stop := c.cancelSession(ctx, sh.conn, sh.s)
		out, exit, sent, err := sh.run(script)
		if stop() {
			// ctx ended: its SIGTERM went to this shell, which must not
			// take the next script.
			c.endShell()
		}
		if err == nil {
			return out, exit, nil
		}
		c.endShell()
		if ctx.Err() != nil {
			return out, -1, ctx.Err()
		}
		// A kept shell that ended since its last script gets one more try,
		// if the script was never sent to it: running one twice could load
		// a module twice, or crash a guest twice.
		if sent {
			return out, -1, fmt.Errorf("running a script on %s: %w", c.who(), err)
		}
	}
}

// startShell starts the kept shell; the caller holds shellMu.
func (c *Client) startShell(ctx context.Context) error {
	s, conn, err := c.session(ctx)
	if err != nil {
		return err
	}
	in, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return err
	}
	out, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return err
	}
	var token [16]byte
	rand.Read(token[:])
	if err := s.Start("exec sh 2>&1"); err != nil {
		s.Close()
		return fmt.Errorf("starting a shell on %s: %w", c.who(), err)
	}
	c.shell = &keptShell{conn: conn, s: s, in: in, out: bufio.NewReader(out), token: hex.EncodeToString(token[:])}
	return nil
}

// endShell ends the kept shell, if any; the caller holds shellMu.
func (c *Client) endShell() {
	if c.shell != nil {
		c.shell.s.Close()
		c.shell = nil
	}
}

// run sends one script and reads its output between two token lines: the
// first says the shell started the script, the last (after a newline of its
// own, so that it starts a line) gives its exit status. What comes before the
// first is the login shell's (a .bashrc that greets), not the script's. The
// script is killable as Run's commands are: cancelSession's SIGTERM kills it
// with all its processes. On an error, out is what came before it.
//
// A shell used before must first answer a ping: that the script started is
// no proof that it did not run when the token never came back (a guest that
// froze in insmod), so the script is sent only to a shell known alive, and
// sent says whether it was: from then on it may have run.
func (sh *keptShell) run(script string) (out []byte, exit int, sent bool, err error) {
	if sh.used {
		if err := sh.ping(); err != nil {
			return nil, -1, false, err
		}
	}
	sh.used = true
	// The start token gets a newline before it too: an rc file's greeting
	// may not end its line.
	cmd := "printf '\\n%s\\n' " + sh.token + "\n" + killable("{\n"+script+"\n} </dev/null 2>&1") + "\nprintf '\\n%s %s\\n' " + sh.token + " \"$?\"\n"
	if _, err := io.WriteString(sh.in, cmd); err != nil {
		return nil, -1, true, err
	}
	start, end := []byte(sh.token+"\n"), []byte(sh.token+" ")
	started := false
	for {
		line, err := sh.line()
		switch {
		case err != nil:
			return append(out, line...), -1, true, err
		case !started:
			started = bytes.Equal(line, start)
		case bytes.HasPrefix(line, end):
			exit, err := strconv.Atoi(string(bytes.TrimSpace(line[len(end):])))
			return bytes.TrimSuffix(out, []byte("\n")), exit, true, err
		default:
			out = append(out, line...)
		}
	}
}

// ping checks that the shell answers, reading up to its answer.
func (sh *keptShell) ping() error {
	if _, err := io.WriteString(sh.in, "echo "+sh.token+" ready\n"); err != nil {
		return err
	}
	for {
		line, err := sh.line()
		if err != nil || string(line) == sh.token+" ready\n" {
			return err
		}
	}
}

// line reads one line of the shell's output.
func (sh *keptShell) line() ([]byte, error) {
	line, err := sh.out.ReadBytes('\n')
	if errors.Is(err, io.EOF) {
		err = errors.New("the shell ended")
	}
	return line, err
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"kwatch/builder"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/proc"
)

// seedScript is what the seed does by hand after a save: build, copy the
// module in, reload it and read the log, each step a new OpenSSH connection.
// It marks each step on stdout so the bench can time it.
const seedScript = `set -e
SSH="-F /dev/null -i $STATE/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=$STATE/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR"
echo @build
make -C "$KDIR" M="$SRC" -j"$(nproc)" modules >/dev/null
echo @upload
scp $SSH -q -P "$PORT" "$SRC/$NAME.ko" root@127.0.0.1:/tmp/$NAME.ko
echo @rmmod
ssh $SSH -p "$PORT" root@127.0.0.1 rmmod $NAME || true
echo @insmod
ssh $SSH -p "$PORT" root@127.0.0.1 insmod /tmp/$NAME.ko
echo @dmesg
ssh $SSH -p "$PORT" root@127.0.0.1 dmesg | tail -n 5
`

// seed times the scripted seed loop: save, then run the script at once.
func (b *bench) seed(ctx context.Context, p *project) (*variant, error) {
	v := &variant{name: "seed loop (make, scp, ssh ×3)", steps: []string{"build", "upload", "rmmod", "insmod", "dmesg"}}
	st, ok, err := vm.ReadState(b.guest.state())
	if err != nil || !ok {
		return v, fmt.Errorf("reading the guest's state: ok=%v %v", ok, err)
	}
	env := append(os.Environ(), "STATE="+b.guest.state(), "KDIR="+b.guest.kdir, "SRC="+p.src, "NAME="+p.name, fmt.Sprintf("PORT=%d", st.Port))
	for range b.cfg.edits {
		want, saved, err := p.edit()
		if err != nil {
			return v, err
		}
		marks, line, err := runMarked(ctx, exec.Command("sh", "-c", seedScript), env, want)
		if err != nil {
			return v, fmt.Errorf("seed script, version %d: %w", p.version, err)
		}
		if len(marks) != len(v.steps) {
			return v, fmt.Errorf("seed script, version %d: %d step marks, want %d", p.version, len(marks), len(v.steps))
		}
		// Each step runs from its mark to the next; the first from the save.
		times := append([]time.Time{saved}, marks[1:]...)
		times = append(times, line)
		var steps []time.Duration
		for i := 1; i < len(times); i++ {
			steps = append(steps, times[i].Sub(times[i-1]))
		}
		v.add(line.Sub(saved), steps...)
	}
	return v, nil
}

// runMarked runs a script and returns when its "@step" marks and the line
// containing want arrived on its stdout.
func runMarked(ctx context.Context, cmd *exec.Cmd, env []string, want string) (marks []time.Time, line time.Time, err error) {
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, line, err
	}
	if err := proc.Start(cmd); err != nil {
		return nil, line, err
	}
	defer proc.KillGroup(cmd.Process.Pid, 0)
	stop := context.AfterFunc(ctx, func() { proc.KillGroup(cmd.Process.Pid, proc.Grace) })
	defer stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		now := time.Now()
		switch {
		case strings.HasPrefix(sc.Text(), "@"):
			marks = append(marks, now)
		case strings.Contains(sc.Text(), want) && line.IsZero():
			line = now
		}
	}
	if err := cmd.Wait(); err != nil {
		return nil, line, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if line.IsZero() {
		return nil, line, fmt.Errorf("the init line %q never came", want)
	}
	return marks, line, nil
}

// floor times the least any tool can do: make, then upload and insmod on an
// SSH connection that is already open, reading the log in the same command.
func (b *bench) floor(ctx context.Context, p *project) (*variant, error) {
	v := &variant{name: "floor (make + insmod on an open connection)", steps: []string{"build", "upload", "reload + log"}}
	c, err := b.dialGuest(ctx)
	if err != nil {
		return v, err
	}
	defer c.Close()
	rtt, err := sessionRTT(ctx, c)
	if err != nil {
		return v, err
	}
	b.res.sessionRTT = append(b.res.sessionRTT, kernelTime{b.guest.label, rtt})
	for range b.cfg.edits {
		// A fresh builder each time: one that has built before takes kwatch's
		// fast path, and this row is plain Kbuild's floor.
		mk, err := builder.Kbuild(p.src, builder.KbuildOptions{KDir: b.guest.kdir})
		if err != nil {
			return v, err
		}
		want, saved, err := p.edit()
		if err != nil {
			return v, err
		}
		res, err := mk.Build(ctx, io.Discard)
		if err != nil {
			return v, fmt.Errorf("building version %d: %w", p.version, err)
		}
		built := time.Now()
		remote, _, err := c.Upload(ctx, res.KO, p.name+".ko")
		if err != nil {
			return v, err
		}
		reload := fmt.Sprintf("rmmod %[1]s; insmod %[2]s && dmesg | tail -n 5", p.name, remote)
		uploaded := time.Now()
		out, errOut, _, err := c.Run(ctx, reload)
		if err != nil {
			return v, fmt.Errorf("reloading version %d: %w", p.version, err)
		}
		if !strings.Contains(string(out), want) {
			return v, fmt.Errorf("reloading version %d: no %q in the log: %s%s", p.version, want, out, errOut)
		}
		done := time.Now()
		v.add(done.Sub(saved), built.Sub(saved), uploaded.Sub(built), done.Sub(uploaded))
	}
	return v, nil
}

// dialGuest opens an SSH connection of the bench's own to the guest the parts share.
func (b *bench) dialGuest(ctx context.Context) (*ssh.Client, error) {
	st, ok, err := vm.ReadState(b.guest.state())
	if err != nil || !ok {
		return nil, fmt.Errorf("reading the guest's state: ok=%v %v", ok, err)
	}
	signer, _, err := ssh.LoadOrCreateKey(b.guest.state())
	if err != nil {
		return nil, err
	}
	c, err := ssh.Dial(ctx, ssh.Config{Addr: fmt.Sprintf("127.0.0.1:%d", st.Port), User: "root",
		Signers: []xssh.Signer{signer}, KnownHosts: filepath.Join(b.guest.state(), "known_hosts"), TrustNew: true})
	if err != nil {
		return nil, fmt.Errorf("connecting to the guest: %w", err)
	}
	return c, nil
}

const rttRuns = 10

// sessionRTT is the median time of one trivial command on an open connection:
// the unit of every step that runs a command in the guest.
func sessionRTT(ctx context.Context, c *ssh.Client) (time.Duration, error) {
	var ts []time.Duration
	for range rttRuns {
		t := time.Now()
		if _, _, _, err := c.Run(ctx, "true"); err != nil {
			return 0, fmt.Errorf("running true in the guest: %w", err)
		}
		ts = append(ts, time.Since(t))
	}
	slices.Sort(ts)
	return ts[len(ts)/2], nil
}

package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"kwatch/guest"
	"kwatch/proc"
	"kwatch/statedir"
)

// Launcher builds the command that boots a VM whose SSH port 22 is forwarded
// to 127.0.0.1:port, with accel "kvm" or "tcg". The VM machinery (not the
// launcher) sets stdin to /dev/null, stdout+stderr to the console log (through
// a keeper that caps it, see console.go), a new session (Setsid, so the VM
// outlives kwatch), and records the pid: the keeper's, which leads the VM's
// process group.
type Launcher func(port int, accel string) (*exec.Cmd, error)

// State is persisted as StateDir/vm.json so later kwatch runs (and
// `kwatch vm status/down`) find the VM.
type State struct {
	Kind       guest.Kind    `json:"backend,omitempty"` // QEMU or Nix; none in a record of no VM
	PID        int           `json:"pid"`
	Process    proc.Identity `json:"process"` // proves PID is still the VM before it is signalled
	Port       int           `json:"ssh_port"`
	Accel      string        `json:"accel"`
	Kernel     string        `json:"kernel,omitempty"`
	Ident      string        `json:"ident"` // what the VM was booted from: a different Ident means restart
	ConsoleLog string        `json:"console_log"`
	ConsoleCap int64         `json:"console_cap"` // console.log's size limit; 0: a VM of an older kwatch, whose log has none
	Started    time.Time     `json:"started"`
}

// Process is a VM kwatch boots and keeps running across its own runs: the
// QEMU process (or the NixOS VM script that execs QEMU) recorded in StateDir.
type Process struct {
	StateDir string
	Kind     guest.Kind
	Ident    string
	Kernel   string // the kernel image, named when it does not boot; "" when the launcher picks it
	Launch   Launcher
	Accel    string           // "auto" (or ""), "kvm" or "tcg"
	Notify   func(msg string) // one-line notices for the user, on the goroutine calling Up; may be nil
}

// kvmSilence is how long a KVM guest may print nothing before "auto" gives up
// on KVM: on some hosts a KVM guest hangs silently before its first line.
const kvmSilence = 15 * time.Second

const consoleTailLines = 20

// bootError is a failed boot: one line saying what went wrong, and the last
// console lines, which usually say why.
type bootError struct {
	msg  string
	tail []string
	// early means the VM died or stayed silent: under "auto" that is KVM's
	// fault often enough to be worth a try with TCG.
	early bool
}

func (e *bootError) Error() string {
	if len(e.tail) == 0 {
		return e.msg + "; the console log is empty"
	}
	return e.msg + "; last console lines:\n" + strings.Join(e.tail, "\n")
}

// Up returns the state of a running VM, reusing the one recorded in StateDir
// when it is alive, booted from the same Ident and answers SSH; otherwise it
// stops any old one, boots a new one and waits until its SSH port answers.
// On failure the VM is stopped and the error is one line followed by the last
// console lines.
func (v *Process) Up(ctx context.Context, timeout time.Duration) (State, error) {
	if err := statedir.Create(v.StateDir); err != nil {
		return State{}, err
	}
	st, running, err := v.Status()
	if err != nil {
		return State{}, err
	}
	if running && st.Ident == v.Ident && sshBanner(st.Port) == nil {
		if st.ConsoleCap != 0 {
			return st, nil
		}
		v.notify("the VM was started by an older kwatch, whose console log grows without limit: restarting it once")
	}
	if !running && st.PID != 0 && proc.Alive(st.PID) {
		v.notify(fmt.Sprintf("the VM record in %s is stale (%v): removing it, stopping nothing", v.StateDir, Verify(st)))
	}
	if err := v.Down(); err != nil {
		return State{}, err
	}
	accel, err := resolveAccel(v.Accel)
	if err != nil {
		return State{}, err
	}
	if accel == "kvm" && (v.Accel == "auto" || v.Accel == "") {
		st, err := v.boot(ctx, "kvm", timeout, kvmSilence)
		var be *bootError
		if !errors.As(err, &be) || !be.early {
			return st, err
		}
		why := be.msg
		if len(be.tail) > 0 {
			why += " (" + be.tail[len(be.tail)-1] + ")"
		}
		v.notify("kvm: " + why + ", falling back to tcg")
		accel = "tcg"
	}
	return v.boot(ctx, accel, timeout, 0)
}

// boot starts the VM and waits for its SSH banner. With silence > 0 it gives
// up early when the console stays empty that long.
func (v *Process) boot(ctx context.Context, accel string, timeout, silence time.Duration) (State, error) {
	port, err := freePort()
	if err != nil {
		return State{}, err
	}
	launched, err := v.Launch(port, accel)
	if err != nil {
		return State{}, err
	}
	log, err := os.OpenFile(v.consolePath(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return State{}, fmt.Errorf("creating the console log: %w", err)
	}
	log.Close()
	// Stdin, stdout and stderr stay nil, which exec turns into /dev/null: QEMU
	// must never touch the user's tty. Its output goes through the keeper.
	cmd := keeper(launched, v.consolePath())
	// A new session (so pid == pgid for proc.KillGroup) keeps the VM alive when
	// kwatch or its terminal goes away. Not proc.Start: setpgid fails on a session leader.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return State{}, fmt.Errorf("starting the VM (%s): %w", launched.Path, err)
	}
	// Read before anyone waits for it: until then even a VM that exited at
	// once is still in /proc, as a zombie.
	id, err := proc.IdentityOf(cmd.Process.Pid)
	if err != nil {
		proc.KillGroup(cmd.Process.Pid, proc.Grace)
		cmd.Wait()
		return State{}, fmt.Errorf("recording the VM's identity: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	st := State{
		Kind:       v.Kind,
		PID:        cmd.Process.Pid,
		Process:    id,
		Port:       port,
		Accel:      accel,
		Kernel:     v.Kernel,
		Ident:      v.Ident,
		ConsoleLog: v.consolePath(),
		ConsoleCap: consoleLimit,
		Started:    time.Now(),
	}
	// Recorded before waiting, so a kwatch killed during the boot leaves a VM the next run can stop.
	if err := writeState(v.StateDir, st); err != nil {
		proc.KillGroup(st.PID, proc.Grace)
		return State{}, err
	}
	v.notify(fmt.Sprintf("booting the VM (%s, accel %s); waiting for its SSH server", v.Kind, accel))
	if err := v.waitSSH(ctx, st, exited, timeout, silence); err != nil {
		if derr := v.Down(); derr != nil {
			return State{}, fmt.Errorf("%w (and stopping it: %v)", err, derr)
		}
		return State{}, err
	}
	return st, nil
}

func (v *Process) waitSSH(ctx context.Context, st State, exited <-chan error, timeout, silence time.Duration) error {
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if sshBanner(st.Port) == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("booting the VM: %w", ctx.Err())
		case err := <-exited:
			if err == nil {
				err = errors.New("exit status 0")
			}
			if v.consoleEmpty() {
				// QEMU itself complains on stderr, which is the console log: a
				// silent exit means the kernel died before printing anything.
				return &bootError{msg: fmt.Sprintf("%s did not boot (is the image complete, and an x86_64 kernel?): the VM exited (%v)", v.kernelName(), err), early: true}
			}
			return v.failure(fmt.Sprintf("the VM exited (%v) before its SSH port answered", err), true)
		case <-tick.C:
		}
		switch {
		case silence > 0 && time.Since(start) > silence && v.consoleEmpty():
			return v.failure(fmt.Sprintf("guest printed nothing in %s", silence), true)
		case time.Since(start) > timeout:
			return v.failure(fmt.Sprintf("guest did not answer on SSH within %s", timeout), false)
		}
	}
}

func (v *Process) kernelName() string {
	if v.Kernel == "" {
		return "the kernel"
	}
	return "the kernel " + v.Kernel
}

func (v *Process) failure(msg string, early bool) error {
	return &bootError{msg: msg, tail: v.ConsoleTail(consoleTailLines), early: early}
}

// Down stops the recorded VM and removes its state; no error if there is none.
// A stale record (see Verify) is removed and nothing is signalled.
func (v *Process) Down() error {
	st, running, err := v.Status()
	if err != nil {
		return err
	}
	if running {
		proc.KillGroup(st.PID, proc.Grace)
		if proc.GroupAlive(st.PID) {
			return fmt.Errorf("could not stop the VM (process group %d): kill it by hand", st.PID)
		}
	}
	if err := os.Remove(v.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the VM state: %w", err)
	}
	return nil
}

// Status returns the recorded VM and whether its process is still running
// (Verify).
func (v *Process) Status() (st State, running bool, err error) {
	st, ok, err := ReadState(v.StateDir)
	if err != nil || !ok {
		return st, false, err
	}
	return st, Verify(st) == nil, nil
}

// Verify checks that the recorded VM runs: its pid must be the very process
// kwatch started (same start time, same boot) and still lead its own process
// group, which is what stopping it signals. Its error says why the record is
// stale: a record without that proof is never trusted with a signal.
func Verify(st State) error {
	if err := proc.Verify(st.PID, st.Process); err != nil {
		return err
	}
	if pgid, err := syscall.Getpgid(st.PID); err != nil || pgid != st.PID {
		return fmt.Errorf("process %d does not lead its own process group", st.PID)
	}
	return nil
}

// Answering reports whether the recorded VM runs and its SSH server answers.
func (v *Process) Answering() bool {
	st, running, err := v.Status()
	return err == nil && running && sshBanner(st.Port) == nil
}

// ReadState reads StateDir/vm.json; ok is false when there is none.
func ReadState(stateDir string) (st State, ok bool, err error) {
	p := filepath.Join(stateDir, "vm.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		return State{}, false, fmt.Errorf("reading the VM state: %w (stop the VM by hand and delete %s)", err, p)
	}
	return st, true, nil
}

func writeState(stateDir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the VM state: %w", err)
	}
	p := filepath.Join(stateDir, "vm.json")
	if err := os.WriteFile(p+".tmp", append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the VM state: %w", err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("writing the VM state: %w", err)
	}
	return nil
}

func (v *Process) statePath() string   { return filepath.Join(v.StateDir, "vm.json") }
func (v *Process) consolePath() string { return filepath.Join(v.StateDir, "console.log") }

// consoleTailBytes bounds how much of a long-running VM's console log is read.
const consoleTailBytes = 64 << 10

// ConsoleTail returns the last n lines of the console log.
func (v *Process) ConsoleTail(n int) []string {
	f, err := os.Open(v.consolePath())
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > consoleTailBytes {
		f.Seek(-consoleTailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	b = bytes.ReplaceAll(b, []byte("\r"), nil) // the serial console ends lines with \r\n
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

func (v *Process) consoleEmpty() bool {
	fi, err := os.Stat(v.consolePath())
	return err != nil || fi.Size() == 0
}

func (v *Process) notify(msg string) {
	if v.Notify != nil {
		v.Notify(msg)
	}
}

// resolveAccel turns the user's --accel into "kvm" or "tcg".
func resolveAccel(want string) (string, error) {
	switch want {
	case "tcg":
		return "tcg", nil
	case "kvm":
		if !kvmUsable() {
			return "", errors.New("kvm requested but /dev/kvm is not usable: use --accel tcg")
		}
		return "kvm", nil
	case "auto", "":
		if kvmUsable() {
			return "kvm", nil
		}
		return "tcg", nil
	}
	return "", fmt.Errorf("unknown accel %q: use auto, kvm or tcg", want)
}

func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// freePort asks the kernel for a free port on 127.0.0.1 for the SSH forward.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port for the VM's SSH: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sshBanner checks that an SSH server answers on 127.0.0.1:port. QEMU's user
// network accepts connections even before the guest listens, so only the
// server's "SSH-" banner proves the guest is up.
func sshBanner(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "SSH-" {
		return fmt.Errorf("port %d answered %q, not an SSH banner", port, b)
	}
	return nil
}

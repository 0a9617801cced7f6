package guest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kwatch/proc"
)

// GDBSocket is where every VM kwatch starts serves QEMU's gdbstub: a Unix
// socket in the 0700 state dir, because the stub has no authentication and
// a TCP port would let anyone on the machine into the guest's kernel.
func GDBSocket(stateDir string) string { return filepath.Join(stateDir, "gdb.sock") }

// GDBIdent ends the Ident of a VM booted with the gdb socket, so a VM
// started before kwatch had one is restarted (Up restarts on a new Ident).
const GDBIdent = " +gdbsock"

// maxSocketPath is sun_path's size minus its NUL on Linux.
const maxSocketPath = 107

// GDBArgs are QEMU's arguments for a gdbstub on the Unix socket sock.
func GDBArgs(sock string) ([]string, error) {
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("the gdb socket path %s is %d bytes, longer than a Unix socket allows (%d): use a shorter --state-dir", sock, len(sock), maxSocketPath)
	}
	// QEMU's option syntax doubles a comma inside a value.
	return []string{"-chardev", "socket,path=" + strings.ReplaceAll(sock, ",", ",,") + ",server=on,wait=off,id=gdb0", "-gdb", "chardev:gdb0"}, nil
}

// gdbPIDFile holds the pid of the `kwatch gdb` attached to the VM's stub.
func gdbPIDFile(stateDir string) string { return filepath.Join(stateDir, "gdb.pid") }

// Debugged reports whether a `kwatch gdb` session is attached to the VM: a
// guest stopped at a breakpoint does not answer SSH, and is not dead.
func (v *VM) Debugged() bool { return DebuggerPID(v.StateDir) != 0 }

// DebuggerPID returns the pid of the live `kwatch gdb` attached to the VM of
// stateDir, 0 when there is none.
func DebuggerPID(stateDir string) int {
	b, err := os.ReadFile(gdbPIDFile(stateDir))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !proc.Alive(pid) {
		return 0
	}
	return pid
}

// MarkDebugger records pid as the session attached to the VM; the returned
// func removes the record.
func MarkDebugger(stateDir string, pid int) (func(), error) {
	p := gdbPIDFile(stateDir)
	if err := os.WriteFile(p, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("recording the gdb session: %w", err)
	}
	return func() { os.Remove(p) }, nil
}

// ResumeGDB makes sure the guest runs after a gdb session: a client that
// connects to QEMU's stub stops the VM, and its detach ("D") resumes it. A
// gdb that exits without detaching (killed, say) would leave it stopped.
func ResumeGDB(sock string) error {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return fmt.Errorf("resuming the guest through %s: %w", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The detach packet for process 1 with its checksum; QEMU answers
	// "+$OK#9a". Once a gdb has turned on multiprocess mode, QEMU refuses a
	// "D" without the pid.
	if _, err := c.Write([]byte("$D;1#b0")); err != nil {
		return fmt.Errorf("resuming the guest: %w", err)
	}
	buf := make([]byte, 64)
	var got []byte
	for !bytes.Contains(got, []byte("OK")) {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("resuming the guest: no answer to detach: %w", err)
		}
		got = append(got, buf[:n]...)
	}
	c.Write([]byte("+"))
	return nil
}

package vm

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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

// gdbPIDFile records the `kwatch gdb` attached to the VM's stub.
func gdbPIDFile(stateDir string) string { return filepath.Join(stateDir, "gdb.pid") }

// debuggerRecord is gdb.pid's content: the session's pid, with the identity
// that proves a live pid is still that session (as vm.json proves its VM).
type debuggerRecord struct {
	PID     int           `json:"pid"`
	Process proc.Identity `json:"process"`
}

// Debugged reports whether a `kwatch gdb` session is attached to the VM: a
// guest stopped at a breakpoint does not answer SSH, and is not dead.
func (v *Process) Debugged() bool { return DebuggerPID(v.StateDir) != 0 }

// DebuggerPID returns the pid of the live `kwatch gdb` attached to the VM of
// stateDir, 0 when there is none. A record that does not prove its session
// still runs (a bare pid, which an older kwatch wrote, or the pid of a
// process that started later) names none: after an unclean exit its pid
// may belong to anything.
func DebuggerPID(stateDir string) int {
	b, err := os.ReadFile(gdbPIDFile(stateDir))
	if err != nil {
		return 0
	}
	var r debuggerRecord
	if json.Unmarshal(b, &r) != nil || proc.Verify(r.PID, r.Process) != nil {
		return 0
	}
	return r.PID
}

// MarkDebugger records the process pid as the session attached to the VM;
// the returned func removes the record.
func MarkDebugger(stateDir string, pid int) (func(), error) {
	id, err := proc.IdentityOf(pid)
	if err != nil {
		return nil, fmt.Errorf("recording the gdb session: %w", err)
	}
	b, err := json.Marshal(debuggerRecord{PID: pid, Process: id})
	if err != nil {
		return nil, fmt.Errorf("recording the gdb session: %w", err)
	}
	p := gdbPIDFile(stateDir)
	if err := os.WriteFile(p, append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("recording the gdb session: %w", err)
	}
	return func() { os.Remove(p) }, nil
}

// ResumeGDB makes sure the guest runs after a gdb session: a client that
// connects to QEMU's stub stops the VM, and its detach resumes it. A gdb
// that exits without detaching (killed, say) would leave it stopped.
func ResumeGDB(sock string) error {
	st, err := DialStub(sock)
	if err != nil {
		return fmt.Errorf("resuming the guest: %w", err)
	}
	return st.Detach()
}

// Stub is a minimal client of QEMU's gdbstub (the GDB remote protocol),
// for reading guest memory before gdb attaches. While it is connected the
// VM stands still.
type Stub struct {
	c net.Conn
	r *bufio.Reader
}

// DialStub connects to the stub on sock, which stops the VM.
func DialStub(sock string) (*Stub, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connecting to the gdbstub: %w", err)
	}
	return &Stub{c: c, r: bufio.NewReader(c)}, nil
}

// packet sends one packet and returns the answer's payload.
func (s *Stub) packet(data string) (string, error) {
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	sum := 0
	for i := 0; i < len(data); i++ {
		sum += int(data[i])
	}
	if _, err := fmt.Fprintf(s.c, "$%s#%02x", data, sum&0xff); err != nil {
		return "", err
	}
	// Acks ('+') come first; the answer is "$payload#xx". QEMU also sends
	// a stop reply ("T02thread:01;") when a new client stops the VM, which
	// no request here asks for: it is skipped.
	for {
		if _, err := s.r.ReadString('$'); err != nil {
			return "", fmt.Errorf("gdbstub: no answer to %q: %w", data, err)
		}
		payload, err := s.r.ReadString('#')
		if err != nil {
			return "", fmt.Errorf("gdbstub: no answer to %q: %w", data, err)
		}
		if _, err := io.ReadFull(s.r, make([]byte, 2)); err != nil {
			return "", err
		}
		s.c.Write([]byte("+"))
		if payload = strings.TrimSuffix(payload, "#"); !strings.HasPrefix(payload, "T") && !strings.HasPrefix(payload, "S") {
			return payload, nil
		}
	}
}

// ReadMemory reads n bytes of guest (virtual) memory at addr.
func (s *Stub) ReadMemory(addr uint64, n int) ([]byte, error) {
	ans, err := s.packet(fmt.Sprintf("m%x,%x", addr, n))
	if err != nil {
		return nil, err
	}
	b, err := hex.DecodeString(ans)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("gdbstub: reading %d bytes at %#x: answer %q", n, addr, ans)
	}
	return b, nil
}

// Detach resumes the VM and closes the connection. It detaches process 1:
// once a gdb has turned on multiprocess mode, QEMU refuses a bare "D".
func (s *Stub) Detach() error {
	defer s.c.Close()
	ans, err := s.packet("D;1")
	if err != nil {
		return err
	}
	if ans != "OK" {
		return fmt.Errorf("gdbstub: detach answered %q", ans)
	}
	return nil
}

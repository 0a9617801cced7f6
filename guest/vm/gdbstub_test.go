package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kwatch/proc"
)

func TestGDBArgs(t *testing.T) {
	tests := []struct {
		sock, want, err string
	}{
		{"/s/gdb.sock", "-chardev socket,path=/s/gdb.sock,server=on,wait=off,id=gdb0 -gdb chardev:gdb0", ""},
		{"/a,b/gdb.sock", "-chardev socket,path=/a,,b/gdb.sock,server=on,wait=off,id=gdb0 -gdb chardev:gdb0", ""},
		{"/" + strings.Repeat("x", 120) + "/gdb.sock", "", "use a shorter --state-dir"},
	}
	for _, tt := range tests {
		args, err := GDBArgs(tt.sock)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.sock, err, tt.err)
			}
			continue
		}
		if got := strings.Join(args, " "); err != nil || got != tt.want {
			t.Errorf("%s: got %q (%v), want %q", tt.sock, got, err, tt.want)
		}
	}
}

func TestQEMULauncherGDB(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "k"), filepath.Join(dir, "i")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, sock := range []string{"", filepath.Join(dir, "gdb.sock")} {
		cmd, err := QEMUConfig{Kernel: kernel, Initramfs: initrd, GDBSocket: sock}.Launcher()(2222, "tcg")
		if err != nil {
			t.Skipf("no qemu: %v", err)
		}
		got := strings.Join(cmd.Args, " ")
		want := "-chardev socket,path=" + sock + ",server=on,wait=off,id=gdb0 -gdb chardev:gdb0"
		if sock == "" && strings.Contains(got, "-gdb") || sock != "" && !strings.HasSuffix(got, want) {
			t.Errorf("socket %q: %s", sock, got)
		}
	}
}

// gdb.pid proves its session like vm.json proves its VM: after an unclean
// exit its pid may name another process, which must not count as a session
// holding the guest stopped (Restart would refuse to restart a dead guest).
func TestDebuggerRecord(t *testing.T) {
	self := os.Getpid()
	id, err := proc.IdentityOf(self)
	if err != nil {
		t.Fatal(err)
	}
	later := id
	later.StartTime++
	tests := []struct {
		name, record string // "" writes none; "mark" is MarkDebugger's own
		want         int
	}{
		{"none", "", 0},
		{"this session", "mark", self},
		{"a bare pid (an older kwatch's, or reused)", strconv.Itoa(self) + "\n", 0},
		{"the pid, reused by a later process", fmt.Sprintf(`{"pid":%d,"process":{"boot_id":%q,"start_time":%d}}`, self, later.BootID, later.StartTime), 0},
		{"the pid, before a reboot", fmt.Sprintf(`{"pid":%d,"process":{"boot_id":"another","start_time":%d}}`, self, id.StartTime), 0},
		{"no identity", fmt.Sprintf(`{"pid":%d}`, self), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			switch tt.record {
			case "":
			case "mark":
				done, err := MarkDebugger(state, self)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					done()
					if got := DebuggerPID(state); got != 0 {
						t.Errorf("DebuggerPID after the session ended = %d, want 0", got)
					}
				}()
			default:
				if err := os.WriteFile(gdbPIDFile(state), []byte(tt.record), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := DebuggerPID(state); got != tt.want {
				t.Errorf("DebuggerPID = %d, want %d", got, tt.want)
			}
			if got := (&Process{StateDir: state}).Debugged(); got != (tt.want != 0) {
				t.Errorf("Debugged = %v, want %v", got, tt.want != 0)
			}
		})
	}
}

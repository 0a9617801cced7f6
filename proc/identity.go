package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Identity tells a process apart from every other process that ever had its
// pid: its start time (clock ticks after boot, /proc/PID/stat field 22) in
// this boot of the machine. A pid alone is no proof: after a reboot, or once
// the pid was recycled, it names an unrelated process.
type Identity struct {
	BootID    string `json:"boot_id"`
	StartTime uint64 `json:"start_time"`
}

// IdentityOf returns the identity of the running process pid.
func IdentityOf(pid int) (Identity, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return Identity{}, fmt.Errorf("reading the boot id: %w", err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Identity{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// The fields after the command name, which may contain spaces, start
	// with field 3 (state): field 22 is the 20th of them.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 {
		return Identity{}, fmt.Errorf("process %d: short /proc/%d/stat", pid, pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Identity{}, fmt.Errorf("process %d: start time %q: %w", pid, f[19], err)
	}
	return Identity{BootID: strings.TrimSpace(string(boot)), StartTime: start}, nil
}

// Verify checks that pid is alive and is the process whose identity was
// recorded as want. Its error says why not: the process is gone, the pid
// belongs to another process now, or the record has no identity to check.
func Verify(pid int, want Identity) error {
	if want == (Identity{}) {
		return fmt.Errorf("the record of process %d has no identity to check it by", pid)
	}
	if !Alive(pid) {
		return fmt.Errorf("process %d is not running", pid)
	}
	got, err := IdentityOf(pid)
	if err != nil {
		return err
	}
	switch {
	case got.BootID != want.BootID:
		return fmt.Errorf("process %d was recorded before the machine rebooted", pid)
	case got.StartTime != want.StartTime:
		return fmt.Errorf("process %d is another process than the recorded one (it started later)", pid)
	}
	return nil
}

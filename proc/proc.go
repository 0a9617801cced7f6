// Package proc runs and stops external programs (make, nix, qemu) as whole
// process groups, so that cancelling a build or stopping a VM never leaves a
// grandchild behind: `sh -c` and make both die on SIGTERM before their children do.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Grace is how long a process group gets between SIGTERM and SIGKILL.
const Grace = 3 * time.Second

// Run starts cmd in a new process group and waits for it. When ctx is done
// the whole group is terminated and Run returns ctx.Err() once the group is gone.
//
// The group dies with kwatch too, however kwatch ends (a reaper, see reap).
func Run(ctx context.Context, cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	stopReaper, err := reap(cmd.Process.Pid)
	if err != nil {
		KillGroup(cmd.Process.Pid, 0)
		cmd.Wait()
		return err
	}
	defer stopReaper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		// make may leave children that outlive it (a parallel job); reap them too.
		KillGroup(cmd.Process.Pid, 0)
		return err
	case <-ctx.Done():
		KillGroup(cmd.Process.Pid, Grace)
		<-done
		return ctx.Err()
	}
}

// reap starts a reaper in process group pgid: a shell that waits for the end
// of a pipe only kwatch holds, then kills its whole group. So when kwatch is
// SIGKILLed (and its cleanup never runs) the build goes too. Pdeathsig is not
// enough: it reaches only the group's leader, and make leaves its running
// jobs behind when killed. stop ends the reaper, and with it the group.
func reap(pgid int) (stop func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting the reaper: %w", err)
	}
	cmd := exec.Command("sh", "-c", "read _; kill -9 0")
	cmd.Stdin = r
	// Started before anyone waits for the leader: a group exists while its
	// leader is a zombie, so the reaper can always join it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the reaper: %w", err)
	}
	return func() {
		w.Close()
		cmd.Wait()
	}, nil
}

// Start starts cmd as the leader of a new process group.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}

// KillGroup sends SIGTERM to the process group pgid, waits up to grace for it
// to disappear, then sends SIGKILL and waits until the group is gone.
func KillGroup(pgid int, grace time.Duration) {
	if pgid <= 0 {
		return
	}
	if grace > 0 {
		if syscall.Kill(-pgid, syscall.SIGTERM) != nil {
			return
		}
		if waitGone(pgid, grace) {
			return
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	waitGone(pgid, 5*time.Second)
}

// GroupAlive reports whether any process of group pgid still runs. Zombies
// do not count: they are dead, only waiting for a parent (often a slow PID 1)
// to reap them.
func GroupAlive(pgid int) bool {
	if pgid <= 0 || errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
		return false
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if state, pgrp, ok := stat(pid); ok && pgrp == pgid && state != "Z" {
			return true
		}
	}
	return false
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	if pid <= 0 || errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	var ws syscall.WaitStatus
	// Reap it if it is our own exited child.
	if wpid, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); wpid == pid {
		return false
	}
	state, _, ok := stat(pid)
	return ok && state != "Z"
}

// stat reads a process's state letter and process group from /proc.
func stat(pid int) (state string, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// The fields after the command name, which may contain spaces: state ppid pgrp ...
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 3 {
		return "", 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	return f[0], pgrp, err == nil
}

func waitGone(pgid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for GroupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

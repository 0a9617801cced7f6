// Package proc runs and stops external programs (make, nix, qemu) as whole
// process groups, so that cancelling a build or stopping a VM never leaves a
// grandchild behind: `sh -c` and make both die on SIGTERM before their children do.
package proc

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// Grace is how long a process group gets between SIGTERM and SIGKILL.
const Grace = 3 * time.Second

// Run starts cmd in a new process group and waits for it. When ctx is done
// the whole group is terminated and Run returns ctx.Err() once the group is gone.
func Run(ctx context.Context, cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
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

// GroupAlive reports whether any process of group pgid still exists.
func GroupAlive(pgid int) bool {
	return pgid > 0 && !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	if pid <= 0 || errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	var ws syscall.WaitStatus
	// Reap it if it is our own exited child, so a zombie does not count as alive.
	if wpid, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); wpid == pid {
		return false
	}
	return true
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

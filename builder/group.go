package builder

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"kwatch/proc"
)

// procGroup runs a build's many short commands in one process group that
// proc.Run owns: when the build is cancelled or kwatch dies, proc kills the
// whole group, and each command costs one fork instead of a proc.Run with a
// reaper of its own (about 20 ms each).
type procGroup struct {
	pgid  int
	stdin io.Closer
	done  chan error
}

// startGroup starts the group's leader, a shell that waits for stop.
func startGroup(ctx context.Context) (*procGroup, error) {
	leader := exec.Command("sh", "-c", "echo $$; read _")
	stdin, err := leader.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := leader.StdoutPipe()
	if err != nil {
		return nil, err
	}
	g := &procGroup{stdin: stdin, done: make(chan error, 1)}
	go func() { g.done <- proc.Run(ctx, leader) }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if g.pgid, _ = strconv.Atoi(strings.TrimSpace(line)); g.pgid <= 0 {
		stdin.Close()
		return nil, fmt.Errorf("starting a process group for the build: %v", <-g.done)
	}
	return g, nil
}

// run runs c in the group and waits for it.
func (g *procGroup) run(c *exec.Cmd) error {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: g.pgid}
	return c.Run()
}

// stop ends the leader and waits until the group is gone.
func (g *procGroup) stop() {
	g.stdin.Close()
	<-g.done
}

package proc

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A cancelled Run must take the shell's background children with it: that is
// the whole point of killing the group rather than the process.
func TestRunCancelKillsWholeGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.Command("sh", "-c", "sleep 300 & echo $!; wait")
	out := &strings.Builder{}
	cmd.Stdout = out
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cmd) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatal("shell never printed its child's pid")
		}
		time.Sleep(10 * time.Millisecond)
	}
	child, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if Alive(child) {
		t.Fatalf("background child %d survived the cancelled group", child)
	}
	if GroupAlive(cmd.Process.Pid) {
		t.Fatal("process group still alive after Run returned")
	}
}

func TestRunReturnsExitStatus(t *testing.T) {
	err := Run(context.Background(), exec.Command("sh", "-c", "exit 3"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Run = %v, want exit status 3", err)
	}
}

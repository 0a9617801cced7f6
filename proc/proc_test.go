package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A cancelled Run must take the shell's background children with it: that is
// the whole point of killing the group rather than the process.
func TestRunCancelKillsWholeGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.Command("sh", "-c", "sleep 300 & echo $!; wait")
	out := &lockedBuilder{}
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

// lockedBuilder is a strings.Builder the test reads while exec's copying
// goroutine writes it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunReturnsExitStatus(t *testing.T) {
	err := Run(context.Background(), exec.Command("sh", "-c", "exit 3"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Run = %v, want exit status 3", err)
	}
}

// A kwatch that is SIGKILLed runs no cleanup, yet its build must not outlive
// it: neither make nor the jobs make runs. The stand-in for kwatch is this
// test binary running TestHelperBuild, which runs a real make with two jobs.
func TestBuildDiesWithKwatch(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	dir := t.TempDir()
	// Compound recipes, as Kbuild's are: make runs them through sh, and a
	// shell that gets SIGTERM leaves its running command behind.
	mk := "all: a b\na:\n\tsleep 300; true\nb:\n\tsleep 301; true\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	kwatch := exec.Command(os.Args[0], "-test.run=^TestHelperBuild$")
	kwatch.Env = append(os.Environ(), "PROC_HELPER_MAKEDIR="+dir)
	if err := kwatch.Start(); err != nil {
		t.Fatal(err)
	}
	defer kwatch.Wait()
	defer kwatch.Process.Kill()
	var build []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		build = descendants(kwatch.Process.Pid)
		if countComm(build, "sleep") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("make never ran both jobs; descendants %v", build)
		}
		time.Sleep(20 * time.Millisecond)
	}
	kwatch.Process.Kill()
	deadline = time.Now().Add(5 * time.Second)
	for {
		var alive []int
		for _, pid := range build {
			if Alive(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range alive {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes of the build outlived the SIGKILLed kwatch: %v", alive)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelperBuild is the kwatch of TestBuildDiesWithKwatch.
func TestHelperBuild(t *testing.T) {
	dir := os.Getenv("PROC_HELPER_MAKEDIR")
	if dir == "" {
		t.Skip("helper process of TestBuildDiesWithKwatch")
	}
	Run(context.Background(), exec.Command("make", "-s", "-j2", "-C", dir))
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], child)
		}
	}
	var out []int
	for todo := children[pid]; len(todo) > 0; todo = todo[1:] {
		out = append(out, todo[0])
		todo = append(todo, children[todo[0]]...)
	}
	return out
}

func countComm(pids []int, name string) int {
	n := 0
	for _, pid := range pids {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.TrimSpace(string(b)) == name {
			n++
		}
	}
	return n
}

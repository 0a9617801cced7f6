package watcher

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv selects what TestHelperProcess does in a child test process.
const helperEnv = "KWATCH_WATCHER_HELPER"

// helper returns a command that runs TestHelperProcess in mode, with dir as its argument.
func helper(mode, dir string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v", "--", dir)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestHelperProcess is not a test: it is the body of the child processes
// that the limit and overflow tests start.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("runs only as a child of another test")
	}
	dir := flagArgs()[0]
	switch mode {
	case "limits":
		helperLimits(t, dir)
	case "overflow":
		helperOverflow(t, dir)
	}
}

func flagArgs() []string {
	for i, a := range os.Args {
		if a == "--" {
			return os.Args[i+1:]
		}
	}
	return nil
}

// TestLimitErrors exhausts the inotify limits inside a new user namespace,
// whose limits (/proc/sys/user/max_inotify_*) apply only to it.
func TestLimitErrors(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		mkdir(t, filepath.Join(root, d))
	}
	cmd := helper("limits", root)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Skipf("cannot start a process in a new user namespace: %v", err)
	}
	if err != nil {
		t.Fatalf("helper failed: %v\n%s", err, out)
	}
}

func setLimit(t *testing.T, name string, n int) {
	if err := os.WriteFile("/proc/sys/user/"+name, []byte(strconv.Itoa(n)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func helperLimits(t *testing.T, root string) {
	tests := []struct {
		limit  string
		value  int
		sysctl string
		errno  error
	}{
		{"max_inotify_watches", 2, "fs.inotify.max_user_watches", unix.ENOSPC}, // root and one of three subdirectories
		{"max_inotify_instances", 0, "fs.inotify.max_user_instances", unix.EMFILE},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			setLimit(t, tt.limit, tt.value)
			w, err := New(root, Options{})
			if err == nil {
				w.Close()
				t.Fatal("New succeeded")
			}
			want := fmt.Sprintf(`^watching %s(/[abc])?: inotify (watch|instance) limit reached \(%s=\d+\); raise it with: sudo sysctl %s=\d+$`,
				regexp.QuoteMeta(root), regexp.QuoteMeta(tt.sysctl), regexp.QuoteMeta(tt.sysctl))
			if !regexp.MustCompile(want).MatchString(err.Error()) {
				t.Errorf("error = %q, want match for %q", err, want)
			}
			t.Log(err)
			if !errors.Is(err, tt.errno) {
				t.Errorf("error %q is not %v", err, tt.errno)
			}
		})
	}
}

// TestOverflow stops a child that watches a directory, makes more changes
// than the kernel queues, and expects a Rescan batch once the child runs again.
func TestOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("creates about 17,000 files")
	}
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	queued, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cmd := helper("overflow", root)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != "ready" {
	}
	must(t, cmd.Process.Signal(syscall.SIGSTOP))
	for i := range queued + 1000 {
		f, err := os.Create(filepath.Join(root, fmt.Sprintf("f%05d.c", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	must(t, cmd.Process.Signal(syscall.SIGCONT))
	var out strings.Builder
	for lines.Scan() {
		out.WriteString(lines.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper failed: %v\n%s", err, out.String())
	}
}

func helperOverflow(t *testing.T, root string) {
	w := newWatcher(t, root, Options{Quiet: 30 * time.Millisecond})
	fmt.Println("ready")
	// The parent stops this process while it creates the files, which can
	// take long on a busy machine: wait longer than nextBatch does.
	timeout := time.After(time.Minute)
	for rescan := false; !rescan; {
		select {
		case b := <-w.Batches():
			rescan = b.Rescan
		case <-timeout:
			t.Fatal("no batch with Rescan")
		}
	}
	select {
	case err := <-w.Errors():
		if !strings.Contains(err.Error(), "overflowed") {
			t.Errorf("error = %q, want the overflow", err)
		}
	default:
		t.Error("no error about the overflow")
	}
}

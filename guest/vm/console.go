package vm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
)

// The VM's console goes into its log through a keeper: a process that runs
// the VM as its child and copies the VM's stdout and stderr into the log,
// rotating it at consoleLimit. It outlives kwatch, as the VM does, so a guest
// printing without end cannot fill the disk whether kwatch runs or not; and
// it leads the VM's process group, so stopping the VM stops it too.
//
// The keeper is this very program run again (/proc/self/exe, which works in
// the kwatch binary and in a test binary alike) with keeperEnv naming the log.

// consoleLimit is the most console.log holds; console.log.1 holds the output
// before it. QEMU's -serial file would grow without limit.
const consoleLimit = 4 << 20

// keeperEnv, set to the log's path, makes this program the console keeper of
// the command its arguments name.
const keeperEnv = "KWATCH_CONSOLE_KEEPER"

func init() {
	if log := os.Getenv(keeperEnv); log != "" {
		os.Exit(keepConsole(log, os.Args[1:]))
	}
}

// keeper returns the command that runs vm under a console keeper writing to log.
func keeper(vm *exec.Cmd, log string) *exec.Cmd {
	env := vm.Env
	if env == nil {
		env = os.Environ()
	}
	return &exec.Cmd{
		Path: "/proc/self/exe",
		Args: append([]string{"kwatch-console-keeper", vm.Path}, vm.Args...),
		Env:  append(env, keeperEnv+"="+log),
		Dir:  vm.Dir,
	}
}

// keepConsole runs the command argv (its path, then its arguments from the
// name on), copies its output into log until it and every process sharing
// its output are gone, and returns its exit status.
func keepConsole(log string, argv []string) int {
	// The signals that stop the VM must not stop the keeper before the VM's
	// last words are in the log: it ends once the VM's output does.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// Pdeathsig fires when the thread that started the child ends.
	runtime.LockOSThread()
	if len(argv) < 2 {
		fmt.Fprintln(os.Stderr, "kwatch-console-keeper: no command to run")
		return 2
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kwatch-console-keeper:", err)
		return 1
	}
	vm := &exec.Cmd{Path: argv[0], Args: argv[1:], Env: slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, keeperEnv+"=") }), Stdout: w, Stderr: w,
		// Killed with the keeper: a VM nobody can find by its record must not run on.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	err = vm.Start()
	w.Close()
	if err != nil {
		r.Close()
		appendLine(log, fmt.Sprintf("starting the VM: %v", err))
		return 127
	}
	copyConsole(r, log, consoleLimit)
	var exit *exec.ExitError
	switch err := vm.Wait(); {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.Exited():
		return exit.ExitCode()
	case errors.As(err, &exit):
		return 128 + int(exit.Sys().(syscall.WaitStatus).Signal())
	}
	return 1
}

// copyConsole copies r into the file log until r ends, keeping log at most
// limit bytes: a write that would cross it first renames log to log.1
// (replacing the one before) and starts log anew. It never stops reading: a
// VM whose output nobody reads stalls.
func copyConsole(r io.Reader, log string, limit int64) {
	f, size := openLog(log, 0)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if size+int64(n) > limit && size > 0 {
				if f != nil {
					f.Close()
				}
				os.Rename(log, log+".1")
				f, size = openLog(log, os.O_TRUNC)
			}
			if f != nil {
				f.Write(buf[:n])
			}
			size += int64(n)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			return
		}
	}
}

// openLog opens log to append to it (flag may add O_TRUNC), and returns its
// size; nil when it cannot be opened, and the output is dropped.
func openLog(log string, flag int) (*os.File, int64) {
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND|flag, 0o600)
	if err != nil {
		return nil, 0
	}
	fi, err := f.Stat()
	if err != nil {
		return f, 0
	}
	return f, fi.Size()
}

// appendLine adds one line to log.
func appendLine(log, line string) {
	if f, _ := openLog(log, 0); f != nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
}

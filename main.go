// Command kwatch hot-reloads a Linux kernel module into a running VM: it
// watches the module's sources, rebuilds the .ko on every save, pushes it into
// the guest over SFTP, reloads it and streams the guest's kernel log.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"kwatch/loop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// After the first ^C, a second one kills kwatch at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is bad input: exit code 2 with a one-line message and a hint.
type usageError struct{ msg, hint string }

func (e *usageError) Error() string { return e.msg }

func usagef(hint, format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), hint: hint}
}

// exitError carries a guest command's exit status out of `kwatch vm ssh`.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode maps errors to kwatch's exit codes in one place: 0 ok, 1 the job
// failed, 2 usage or configuration error.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, loop.ErrFailed):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kwatch: error: %s\n", ue.msg)
		if ue.hint != "" {
			fmt.Fprintf(stderr, "kwatch: hint: %s\n", ue.hint)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "kwatch: error: %s\n", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "vm":
			return runVM(ctx, args[1:], stdout, stderr)
		case "gdb":
			return runGDB(ctx, args[1:], stdout, stderr)
		case "init":
			return runInit(args[1:], stdout, stderr)
		case "help":
			return runWatch(ctx, []string{"-h"}, stdout, stderr)
		}
	}
	return runWatch(ctx, args, stdout, stderr)
}

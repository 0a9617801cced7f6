package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"kwatch/event"
	"kwatch/loop"
	"kwatch/machine"
)

// usageError is bad input: exit code 2 with a one-line message and a hint.
type usageError struct{ msg, hint string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Hint() string  { return e.hint }

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
	var me *machine.InputError
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, loop.ErrFailed):
		return 1
	case errors.As(err, &ue):
		printError(stderr, ue)
		return 2
	case errors.As(err, &me): // the guest's flags
		printError(stderr, me)
		return 2
	default:
		printError(stderr, err)
		return 1
	}
}

// printError is the one place an error that ends kwatch is written: its
// message, then its hint if it has one (age's errorWithHint).
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "kwatch: error: %s\n", err)
	if hint := event.Hint(err); hint != "" {
		fmt.Fprintf(w, "kwatch: hint: %s\n", hint)
	}
}

package machine

import (
	"fmt"
	"io"
	"time"

	"kwatch/guest/vm"
	"kwatch/statedir"
)

// Down stops the managed VM recorded in stateDir, taking the state dir's
// lock first, and tells out what it did. Without a record there is
// nothing to stop, and nothing is created.
func Down(stateDir string, out io.Writer) error {
	st, ok, err := vm.ReadState(stateDir)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintln(out, "no VM was running")
		return nil
	}
	lock, err := statedir.Acquire(stateDir)
	if err != nil {
		return err
	}
	defer lock.Release()
	stale := vm.Verify(st)
	if err := (&vm.Process{StateDir: stateDir}).Down(); err != nil {
		return err
	}
	if stale != nil {
		fmt.Fprintf(out, "removed a stale VM record (%v); signalled nothing\n", stale)
	} else {
		fmt.Fprintf(out, "stopped the %s VM (pid %d)\n", st.Kind, st.PID)
	}
	return nil
}

// Status tells out about the managed VM recorded in stateDir; a stale
// record is removed when no kwatch holds the state dir.
func Status(stateDir string, out io.Writer) error {
	st, ok, err := vm.ReadState(stateDir)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintf(out, "no VM (state dir %s)\n", stateDir)
		return nil
	}
	if stale := vm.Verify(st); stale != nil {
		fmt.Fprintf(out, "no VM: the record in %s is stale (%v)\n", stateDir, stale)
		// Only the lock's holder may touch the record: a kwatch holding
		// it may be writing a new one right now.
		if lock, err := statedir.Acquire(stateDir); err == nil {
			defer lock.Release()
			if err := (&vm.Process{StateDir: stateDir}).Down(); err != nil {
				return err
			}
			fmt.Fprintln(out, "removed the stale record; signalled nothing")
		}
		return nil
	}
	fmt.Fprintf(out, "%s VM running for %s\n  pid %d, ssh 127.0.0.1:%d, accel %s\n  console log %s\n",
		st.Kind, time.Since(st.Started).Round(time.Second), st.PID, st.Port, st.Accel, st.ConsoleLog)
	return nil
}

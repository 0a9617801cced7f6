// Package statedir owns kwatch's state directory (.kwatch by default), which
// holds kwatch's private SSH key, the guest's host keys and the VM's disk.
// It is created private (0700) with a .gitignore of "*", so that git, and
// with it a flake's source in the nix store, never picks any of that up;
// one kwatch at a time uses it (Lock); and kwatch uses none that someone
// else could change (Check).
package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Create makes dir (mode 0700) with its .gitignore, where missing, once
// Check accepts it; and checks again what it made, as another user may have
// made a missing dir first.
func Create(dir string) error {
	if err := Check(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the state dir: %w", err)
	}
	if err := Check(dir); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".gitignore"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err == nil {
		_, err = f.WriteString("# kwatch's state: private keys and the VM's disk. Never commit it.\n*\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		return fmt.Errorf("writing the state dir's .gitignore: %w", err)
	}
	return nil
}

// Lock is held by the one kwatch that uses a state dir; the kernel drops it
// when that process ends, however it ends.
type Lock struct{ f *os.File }

// HeldError says that another process holds the state dir's lock.
type HeldError struct {
	Dir string
	PID int // 0 when the holder has not written its pid yet
}

func (e *HeldError) Error() string {
	who := "another kwatch"
	if e.PID > 0 {
		who = fmt.Sprintf("another kwatch (pid %d)", e.PID)
	}
	return fmt.Sprintf("%s uses the state dir %s", who, e.Dir)
}

// Acquire creates dir when missing and locks it. It does not wait: when
// another process holds the lock it returns a *HeldError at once.
func Acquire(dir string) (*Lock, error) {
	if err := Create(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the state dir's lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := os.ReadFile(path)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return nil, &HeldError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("locking the state dir: %w", err)
	}
	// The pid is only for the message a second kwatch prints.
	if err := errors.Join(f.Truncate(0), writePID(f)); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the state dir's lock: %w", err)
	}
	return &Lock{f: f}, nil
}

func writePID(f *os.File) error {
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// Release drops the lock.
func (l *Lock) Release() {
	l.f.Close() // closing the last descriptor releases the flock
}

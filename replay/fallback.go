package replay

import (
	"errors"
	"fmt"
)

// The reasons the fast path falls back. Each error the fast path returns
// wraps one of them (errors.Is) and says in its own words what happened.
var (
	// The full make:
	ErrKernelTreeChanged = errors.New("the kernel tree changed")
	ErrKbuildChanged     = errors.New("a Kbuild file changed")
	ErrSourceAdded       = errors.New("a file was added")
	ErrSourceRemoved     = errors.New("a file was removed")
	ErrUnrecordedFile    = errors.New("a file no Kbuild record names changed")
	ErrNoRecords         = errors.New("no usable Kbuild records")
	ErrNotLearned        = errors.New("make has not run a target since kwatch started")
	ErrCheckWrote        = errors.New("a line that wrote no file in earlier builds wrote one")
	// Kbuild's per-module makes (ViaSteps):
	ErrSelfCheck = errors.New("a record differs from the command make ran")
)

// fallback is a reason with its details.
type fallback struct {
	reason error
	msg    string
}

func (f *fallback) Error() string { return f.msg }
func (f *fallback) Unwrap() error { return f.reason }

func fallbackf(reason error, format string, args ...any) error {
	return &fallback{reason: reason, msg: fmt.Sprintf(format, args...)}
}

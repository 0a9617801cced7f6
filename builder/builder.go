// Package builder turns a kernel module's source tree into a .ko: it runs the
// build, streams its output, and boils a failure down to the lines worth showing.
package builder

import (
	"context"
	"io"
)

// Builder builds a module. A builder with a fast path (Make, and
// nix.Incremental through it) keeps working after Build returns: it still
// writes the fast build's records, and its correctness net runs the full make
// later. Whoever drives a Builder calls Settle before it exits, and may call
// BeginVerify after a fast build; it never calls Build and BeginVerify at
// once. A builder without a fast path does nothing in either.
type Builder interface {
	// Build streams the build's combined output to out as it runs. When ctx
	// is cancelled it kills the whole build and returns ctx.Err(). A failed
	// build returns *Error. It stops the last build's correctness net first.
	Build(ctx context.Context, out io.Writer) (Result, error)

	// Settle waits until the last build's records are all written: cut off
	// by kwatch's exit, they would mislead the next make.
	Settle()

	// BeginVerify starts the correctness net after a build whose Path was
	// PathFast; call it when the guest is idle, and run the check it returns
	// in the background (the next Build stops it). The check returns a
	// Mismatch when the full make built another module than the fast path.
	// BeginVerify returns nil when there is nothing to check.
	BeginVerify(ctx context.Context) func() (*Mismatch, error)
}

// Result is a successful build.
type Result struct {
	KO      string   // absolute path of the module to load (.ko, or .ko.xz from a nix derivation)
	Modules []string // every module the build made, in modules.order (Kbuild); nil when unknown
	Path    string   // how it was built: PathFast, PathKbuild, or "" for a nix derivation
	Via     string   // how the fast path rebuilt it: ViaDirect or ViaSteps; "" for the other paths
	Symvers string   // the kernel's Module.symvers it was linked against (which module exports what); "" when unknown
	// Fallback is why the fast path did not replay the build (it wraps one
	// of replay's Err* reasons, or ErrFastPathOff); nil when it did, and
	// for a first build.
	Fallback error
}

// The paths a Kbuild build takes.
const (
	PathFast   = "fast"   // without the top-level make (package replay)
	PathKbuild = "kbuild" // the full make
)

// The ways the fast path rebuilds.
const (
	ViaDirect = "direct"       // what make ran, run again without make
	ViaSteps  = "kbuild-steps" // Kbuild's per-module makes
)

// Error is a failed build: the lines worth showing the user and an optional one-line hint.
type Error struct {
	Diagnostics []string // "hello.c:12:5: error: ...", "x.rs:26:26: error[E0308]: ...", errors first
	Fix         string   // how to fix a known toolchain problem; "" if none
	Err         error    // why the build command failed, e.g. an *exec.ExitError
}

func (e *Error) Error() string {
	if len(e.Diagnostics) > 0 {
		return e.Diagnostics[0]
	}
	if e.Err == nil {
		return "build failed"
	}
	return "build failed: " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Hint says how to fix the build, "" if kwatch does not know.
func (e *Error) Hint() string { return e.Fix }

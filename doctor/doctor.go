// Package doctor finds out what this host has of what kwatch relies on (QEMU,
// KVM, the guest's initramfs parts, compilers, gdb, Nix, pahole, rustc) and
// what each installed kernel can do with kwatch: boot under --vm qemu, build
// C and Rust modules, run KUnit suites, BTF, kernel symbols for kwatch gdb.
// Each gap is a *Gap wrapping a sentinel error (errors.Is) with the one
// command that closes it.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"kwatch/guest/vm"
	"kwatch/nix"
)

// Sentinel errors: what a probe found missing. Every one comes wrapped in a
// *Gap that says how to close it.
var (
	ErrMissing       = errors.New("not installed")
	ErrNoKVM         = errors.New("no KVM")
	ErrKVMDenied     = errors.New("KVM not usable by this user")
	ErrKVMNoBoot     = errors.New("a KVM guest does not come up")
	ErrOldNix        = errors.New("nix without flakes")
	ErrNoImage       = errors.New("no bootable kernel image")
	ErrNoNIC         = errors.New("no network driver for the guest")
	ErrNoBuildTree   = errors.New("no kernel build tree")
	ErrNoConfig      = errors.New("no kernel configuration")
	ErrNoPahole      = errors.New("pahole missing")
	ErrNoRust        = errors.New("kernel built without Rust")
	ErrRustcMismatch = errors.New("no matching rustc")
	ErrNoKUnit       = errors.New("kernel built without KUnit")
	ErrNoBTF         = errors.New("no BTF for modules")
	ErrNoSymbols     = errors.New("no vmlinux with symbols")
)

// Gap is something missing and the one command (or flag) that closes it.
type Gap struct {
	Err error
	Fix string
}

func (g *Gap) Error() string { return g.Err.Error() }
func (g *Gap) Unwrap() error { return g.Err }

// gapf is a Gap whose message is sentinel's, then the details.
func gapf(sentinel error, fix, format string, a ...any) error {
	return &Gap{Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...)), Fix: fix}
}

// Check is the result of one probe: a tool of the host or a capability of a kernel.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail,omitempty"`  // what was found: a version, a path
	Enables string `json:"enables,omitempty"` // what it is for in kwatch
	Problem string `json:"problem,omitempty"`
	Fix     string `json:"fix,omitempty"`
	Err     error  `json:"-"` // a *Gap, or nil
}

func check(name, enables, detail string, err error) Check {
	c := Check{Name: name, Enables: enables, Detail: detail, OK: err == nil, Err: err}
	if err != nil {
		c.Problem = err.Error()
		var g *Gap
		if errors.As(err, &g) {
			c.Fix = g.Fix
		}
	}
	return c
}

// Options are the kernels to look at besides the installed ones, as
// kwatch's flags give them, and how to ask nix.
type Options struct {
	Kernel, KDir, ModulesDir string
	Nix                      nix.Settings
	// KVMWait bounds the check that a KVM guest comes up (0: 5 s).
	KVMWait time.Duration
}

// Report is what Run found.
type Report struct {
	Tools   []Check   `json:"tools"`
	Kernels []*Kernel `json:"kernels"`
	// DefaultWorks says whether `kwatch DIR` (--vm qemu, the default kernel,
	// Kbuild against its headers) would work; Default names that kernel.
	DefaultWorks bool   `json:"default_works"`
	Default      string `json:"default_kernel,omitempty"`
}

// Run probes the host and every kernel.
func Run(ctx context.Context, opts Options) *Report {
	h := probeHost(ctx, opts)
	r := &Report{Tools: h.checks}
	def := opts.Kernel
	if def == "" {
		def = vm.NewestKernel()
	}
	for _, img := range vm.Kernels() {
		if img == opts.Kernel {
			continue // below, with the flags' build tree and modules dir
		}
		r.Kernels = append(r.Kernels, newKernel(img, "", ""))
	}
	switch {
	case opts.Kernel != "":
		r.Kernels = append(r.Kernels, newKernel(opts.Kernel, opts.KDir, opts.ModulesDir))
	case opts.KDir != "":
		r.Kernels = append(r.Kernels, treeKernel(opts.KDir, opts.ModulesDir))
	}
	for _, k := range r.Kernels {
		k.probe(h)
		if k.Image != "" && filepath.Clean(k.Image) == filepath.Clean(def) {
			k.Default = true
			r.Default = k.Release
			r.DefaultWorks = h.ok("qemu-system-x86_64") && h.ok("guest initramfs") && k.ok("boot") && k.ok("c")
		}
	}
	return r
}

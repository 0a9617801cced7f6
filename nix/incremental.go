package nix

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"kwatch/builder"
)

// Incremental builds the module like its derivation does, with the
// derivation's own build environment and make flags, but with make running
// in a build dir that persists between builds, so only what changed is
// rebuilt. It gives the same .ko as Derivation in a fraction of the time.
// Its fast path, and so what it does after Build returns (Settle,
// BeginVerify), is the builder.Make of its last build.
type Incremental struct {
	Flake    string // flake directory (absolute)
	Attr     string // the module's flake output, as in Derivation
	Src      string // the derivation's src: the module's source dir
	BuildDir string // where make runs; Src is mirrored into it
	Module   string // builder.Make.Module
	Nix      Settings

	mu  sync.Mutex
	env *DevEnv
	mk  *builder.Make // kept between builds for its fast path; dropped with env
}

// Build mirrors Src into BuildDir and runs make there with the derivation's
// makeFlags and buildFlags. The build environment comes from nix once, and
// again after Invalidate.
func (b *Incremental) Build(ctx context.Context, out io.Writer) (builder.Result, error) {
	env, err := b.devEnv(ctx)
	if ctx.Err() != nil {
		return builder.Result{}, ctx.Err()
	}
	if err != nil {
		return builder.Result{}, &builder.Error{Err: fmt.Errorf("getting the module's build environment: %w", err)}
	}
	mk := b.make(env)
	// The last build's late records (fixdep reads the sources) and the
	// correctness net's make both read the sources syncTree rewrites.
	mk.Settle()
	mk.StopVerify()
	if err := syncTree(b.Src, b.BuildDir); err != nil {
		return builder.Result{}, err
	}
	return mk.Build(ctx, out)
}

// Settle waits until the last build's records are all written.
func (b *Incremental) Settle() {
	if mk := b.current(); mk != nil {
		mk.Settle()
	}
}

// BeginVerify starts the last fast build's correctness net.
func (b *Incremental) BeginVerify(ctx context.Context) func() (*builder.Mismatch, error) {
	if mk := b.current(); mk != nil {
		return mk.BeginVerify(ctx)
	}
	return nil
}

// current is the Make the last build ran, nil before the first build and
// after Invalidate.
func (b *Incremental) current() *builder.Make {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mk
}

// make returns the Make for env, a new one (whose first build is a full
// make) whenever the build environment may have changed.
func (b *Incremental) make(env *DevEnv) *builder.Make {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mk == nil {
		args := append(strings.Fields(env.Vars["makeFlags"]), strings.Fields(env.Vars["buildFlags"])...)
		args = append(args, fmt.Sprintf("-j%d", runtime.NumCPU()))
		b.mk = &builder.Make{Dir: b.BuildDir, Args: args, Env: env.Environ(), Module: b.Module}
	}
	return b.mk
}

// Invalidate makes the next Build ask nix for the build environment again
// and run the full make; call it when a .nix file or flake.lock changed.
func (b *Incremental) Invalidate() {
	b.mu.Lock()
	mk := b.mk
	b.env, b.mk = nil, nil
	b.mu.Unlock()
	if mk != nil {
		// The next Make builds in the same dir: the last fast build's
		// records are written first, and the correctness net stops.
		mk.Settle()
		mk.StopVerify()
	}
}

func (b *Incremental) devEnv(ctx context.Context) (*DevEnv, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.env == nil {
		env, err := b.Nix.GetDevEnv(ctx, installable(b.Flake, b.Attr))
		if err != nil {
			return nil, err
		}
		b.env = env
	}
	return b.env, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"kwatch/guest"
	"kwatch/machine"
	"kwatch/nix"
	"kwatch/statedir"
)

// setupInfo is what the flags resolve to before anything is started.
type setupInfo struct {
	vm        guest.Kind
	stateDir  string
	flakeRoot string // "" when there is no flake
}

func (o *options) setup(dir string) (setupInfo, error) {
	var s setupInfo
	s.flakeRoot, _ = nix.FindFlake(dir)
	switch {
	case o.vm != "":
		k, err := guest.ParseKind(o.vm)
		var bad *guest.KindError
		if errors.As(err, &bad) {
			return s, usagef(bad.Hint(), "%v", err)
		}
		s.vm = k
	case o.ssh != "":
		s.vm = guest.SSH
	case s.flakeRoot != "" && o.kernel == "":
		s.vm = guest.Nix
	default:
		s.vm = guest.QEMU
	}
	if s.vm == guest.Nix && s.flakeRoot == "" {
		return s, usagef("run `kwatch init` to create a flake project, or use --vm qemu", "--vm nix needs a flake.nix at or above %s", dir)
	}
	switch o.accel {
	case "auto", "kvm", "tcg":
	default:
		return s, usagef("use --accel auto, kvm or tcg", "unknown --accel %q", o.accel)
	}
	if s.vm == guest.SSH && o.ssh == "" {
		return s, usagef("pass --ssh [user@]host[:port]", "--vm ssh needs --ssh")
	}
	s.stateDir = o.stateDir
	if s.stateDir == "" {
		base := s.flakeRoot
		if base == "" {
			base, _ = os.Getwd()
		}
		s.stateDir = filepath.Join(base, ".kwatch")
	}
	var err error
	if s.stateDir, err = filepath.Abs(s.stateDir); err != nil {
		return s, err
	}
	// Before anything in it is read: kwatch trusts what it finds there.
	return s, stateErr(statedir.Check(s.stateDir))
}

// checkStart checks what starting the guest and the build needs, before the
// state dir is created or anything runs: bad input must cost nothing and
// leave nothing behind.
func (o *options) checkStart(ctx context.Context, s setupInfo) error {
	if (s.vm == guest.Nix || o.builder == "nix") && within(s.stateDir, s.flakeRoot) {
		if in, _ := nix.InGit(ctx, s.flakeRoot); !in {
			return usagef(fmt.Sprintf("cd %s && git init && git add flake.nix and the sources (git ignores .kwatch), or pass --state-dir outside it", s.flakeRoot),
				"the flake in %s is not in a git repository: nix would copy all of it, kwatch's private key in %s included, into the world-readable nix store", s.flakeRoot, s.stateDir)
		}
	}
	return machine.Check(s.vm, o.machineOptions(s, nil, nil, nil))
}

// within reports whether path is dir or lies below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// lockState creates the state dir and takes its lock, which the caller holds
// for as long as it may start, stop or replace the VM: one kwatch per state
// dir, so two never boot two VMs. A second one exits at once and says who
// holds the lock, rather than wait for a watch that may run for days.
func lockState(dir string) (*statedir.Lock, error) {
	l, err := statedir.Acquire(dir)
	return l, stateErr(err)
}

// stateErr turns the state dir's refusals (held by another kwatch, open to
// another user) into usage errors: the user's to fix.
func stateErr(err error) error {
	var held *statedir.HeldError
	var unsafe *statedir.UnsafeError
	switch {
	case errors.As(err, &held):
		return usagef("stop that kwatch first, or pass another --state-dir", "%v", err)
	case errors.As(err, &unsafe):
		return usagef(unsafe.Fix, "%v", err)
	}
	return err
}

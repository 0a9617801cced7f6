package main

import (
	"fmt"
	"os"
	"path/filepath"

	"kwatch/nix"
)

// setupInfo is what the flags resolve to before anything is started.
type setupInfo struct {
	vm        string
	stateDir  string
	flakeRoot string // "" when there is no flake
}

func (o *options) setup(dir string) (setupInfo, error) {
	var s setupInfo
	s.flakeRoot, _ = nix.FindFlake(dir)
	s.vm = o.vm
	if s.vm == "" {
		switch {
		case o.ssh != "":
			s.vm = "ssh"
		case s.flakeRoot != "" && o.kernel == "":
			s.vm = "nix"
		default:
			s.vm = "qemu"
		}
	}
	switch s.vm {
	case "qemu", "ssh":
	case "nix":
		if s.flakeRoot == "" {
			return s, usagef("run `kwatch init` to create a flake project, or use --vm qemu", "--vm nix needs a flake.nix at or above %s", dir)
		}
	default:
		return s, usagef("use --vm qemu, --vm nix or --vm ssh", "unknown --vm %q", s.vm)
	}
	switch o.accel {
	case "auto", "kvm", "tcg":
	default:
		return s, usagef("use --accel auto, kvm or tcg", "unknown --accel %q", o.accel)
	}
	if s.vm == "ssh" && o.ssh == "" {
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
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return s, fmt.Errorf("creating the state dir: %w", err)
	}
	return s, nil
}

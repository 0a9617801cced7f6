package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"kwatch/machine"
	"kwatch/nix"
	"kwatch/statedir"
)

const initUsage = `usage: kwatch init [--force] [--name NAME] [DIR]
writes a flake project (NixOS VM with a Rust kernel, module.nix, src/ with a Rust module) into DIR
flags:
`

func runInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlagSet("kwatch init")
	o.initFlags(fs)
	pos, err := parseFlags(fs, args, stderr, initUsage)
	if err != nil {
		return err
	}
	dir, err := dirArg(pos, "kwatch init [DIR]")
	if err != nil {
		return err
	}
	stateDir := filepath.Join(dir, ".kwatch")
	if err := statedir.Check(stateDir); err != nil {
		return stateErr(err)
	}
	// The key is made only once init knows it will write: a refused init
	// leaves nothing behind.
	key := func() (string, error) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("creating %s: %w", dir, err)
		}
		if err := statedir.Create(stateDir); err != nil {
			return "", err
		}
		return machine.AuthorizedKey(stateDir)
	}
	written, err := nix.Init(dir, nix.InitOptions{Name: o.name, AuthorizedKey: key, Force: o.force})
	var bad *nix.InputError
	if errors.As(err, &bad) {
		return usagef(bad.Hint(), "%s", bad.Msg)
	}
	if err != nil {
		return err
	}
	for _, f := range written {
		fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(dir, f))
	}
	// Flakes in a git repository only see tracked files, which keeps .kwatch
	// (keys, the VM's disk) out of the nix store. Only the files init wrote
	// are added: the user's other files are theirs to stage.
	if err := exec.Command("git", "-C", dir, "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		git := exec.Command("git", append([]string{"add", "--"}, written...)...)
		git.Dir = dir
		if out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "kwatch: could not create a git repository in %s: %s\n", dir, strings.TrimSpace(string(out)))
		} else if out, err := git.CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "kwatch: could not add the new files to git in %s: %s\n", dir, strings.TrimSpace(string(out)))
		} else {
			fmt.Fprintf(stdout, "created a git repository with the files above added (nix flakes only see tracked files)\n")
		}
	}
	fmt.Fprintf(stdout, "next: cd %s && kwatch   (the first run builds the NixOS VM and its kernel: this takes a while)\n", dir)
	return nil
}

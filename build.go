package main

import (
	"errors"
	"os"
	"path/filepath"

	"kwatch/builder"
	"kwatch/guest"
	"kwatch/nix"
)

// build is how the module is built and what is watched: the module dir for
// Kbuild, the whole flake for nix (so .nix edits are seen too).
type build struct {
	builder    builder.Builder // nil until kbuild gives it the kernel build dir
	root       string          // the watched tree
	src        string          // the module's Kbuild/Makefile dir
	state      string          // kwatch's state dir
	nix        bool            // .nix edits may change the build and the VM
	invalidate func()          // forgets cached build state after such an edit; may be nil
}

// newBuild checks the build flags and makes the builder, before any guest
// runs: bad input must not cost a VM boot. Only a Kbuild builder without
// --kdir waits for the guest's kernel release (see kbuild).
func (o *options) newBuild(s setupInfo, dir string) (*build, error) {
	kind := o.builder
	if kind == "" {
		kind = "kbuild"
		if s.vm == guest.Nix {
			kind = "nix"
		}
	}
	switch kind {
	case "kbuild":
		src, err := moduleSrc(dir)
		if err != nil {
			return nil, err
		}
		b := &build{root: src, src: src, state: s.stateDir}
		if o.kdir != "" {
			return b, b.kbuild(o.kdir, o)
		}
		return b, nil
	case "nix":
		if s.flakeRoot == "" {
			return nil, usagef("run `kwatch init` or use --builder kbuild", "--builder nix needs a flake.nix at or above %s", dir)
		}
		b := &build{root: s.flakeRoot, nix: true}
		switch o.nixMode {
		case "derivation":
			if o.module != "" {
				return nil, usagef("load one module per derivation, or use --nix-mode incremental", "--module does not work with --nix-mode derivation")
			}
			b.builder = &nix.Derivation{Flake: s.flakeRoot, Attr: o.moduleAttr, OutLink: filepath.Join(s.stateDir, "module-result"), Nix: o.nixSettings()}
		case "incremental":
			src, err := moduleSrc(dir)
			if err != nil {
				return nil, err
			}
			inc := &nix.Incremental{Flake: s.flakeRoot, Attr: o.moduleAttr, Src: src, BuildDir: filepath.Join(s.stateDir, "build"), Module: o.module, Nix: o.nixSettings()}
			b.builder, b.src, b.invalidate = inc, src, inc.Invalidate
		default:
			return nil, usagef("use --nix-mode incremental or derivation", "unknown --nix-mode %q", o.nixMode)
		}
		return b, nil
	}
	return nil, usagef("use --builder kbuild or nix", "unknown --builder %q", kind)
}

// nixSettings are the user's settings for every nix command kwatch runs.
func (o *options) nixSettings() nix.Settings { return nix.Settings{Builders: o.builders} }

// kbuild makes the Kbuild builder against the kernel build dir kdir.
func (b *build) kbuild(kdir string, o *options) error {
	mk, err := builder.Kbuild(b.src, builder.KbuildOptions{KDir: kdir, RustC: o.rustc})
	var be *builder.Error
	if errors.As(err, &be) {
		return usagef(be.Hint(), "%v", be.Err)
	}
	if err != nil {
		return usagef("pass --kdir with a configured kernel build dir", "%v", err)
	}
	mk.EditorFiles, mk.Module = o.editorFiles, o.module
	mk.EditorRecord = filepath.Join(b.state, "editor-files.json")
	b.builder = mk
	return nil
}

// moduleSrc finds the module's Kbuild/Makefile: DIR itself, or DIR/src in a
// `kwatch init` project.
func moduleSrc(dir string) (string, error) {
	for _, d := range []string{dir, filepath.Join(dir, "src")} {
		for _, f := range []string{"Kbuild", "Makefile"} {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				return d, nil
			}
		}
	}
	return "", usagef("point kwatch at the directory holding the module's Makefile or Kbuild", "no Makefile or Kbuild in %s", dir)
}

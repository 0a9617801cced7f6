package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"time"

	"kwatch/builder"
	"kwatch/loop"
	"kwatch/machine"
	"kwatch/nix"
)

// newBuilder picks how the module is built and what is watched: the module
// dir for Kbuild, the whole flake for nix (so .nix edits are seen too).
func (o *options) newBuilder(s setupInfo, dir, release string, g *machine.Machine, report loop.Reporter, log io.Writer) (builder.Builder, string, func(context.Context) error, error) {
	kind := o.builder
	if kind == "" {
		kind = "kbuild"
		if s.vm == "nix" {
			kind = "nix"
		}
	}
	switch kind {
	case "kbuild":
		src, err := moduleSrc(dir)
		if err != nil {
			return nil, "", nil, err
		}
		kdir := o.kdir
		if kdir == "" {
			kdir = filepath.Join("/lib/modules", release, "build")
		}
		mk, err := builder.Kbuild(src, builder.KbuildOptions{KDir: kdir, RustC: o.rustc})
		if err != nil {
			return nil, "", nil, usagef("", "%v", err)
		}
		return mk, src, nil, nil
	case "nix":
		if s.flakeRoot == "" {
			return nil, "", nil, usagef("run `kwatch init` or use --builder kbuild", "--builder nix needs a flake.nix at or above %s", dir)
		}
		var (
			b   builder.Builder
			inc *nix.Incremental
		)
		switch o.nixMode {
		case "derivation":
			b = &nix.Derivation{Flake: s.flakeRoot, Attr: o.moduleAttr, OutLink: filepath.Join(s.stateDir, "module-result")}
		case "incremental":
			src, err := moduleSrc(dir)
			if err != nil {
				return nil, "", nil, err
			}
			inc = &nix.Incremental{Flake: s.flakeRoot, Attr: o.moduleAttr, Src: src, BuildDir: filepath.Join(s.stateDir, "build")}
			b = inc
		default:
			return nil, "", nil, usagef("use --nix-mode incremental or derivation", "unknown --nix-mode %q", o.nixMode)
		}
		changed := func(ctx context.Context) error {
			if inc != nil {
				inc.Invalidate()
			}
			if s.vm != "nix" {
				return nil
			}
			notify := func(msg string) { report.Report(loop.Event{Type: "notice", Time: time.Now(), Message: msg}) }
			out, err := buildNixVM(ctx, s, o.nixVMAttr, notify, log)
			if err != nil {
				return err
			}
			return g.Relaunch(ctx, out, nix.VMLauncher(out, s.stateDir, ""))
		}
		return b, s.flakeRoot, changed, nil
	}
	return nil, "", nil, usagef("use --builder kbuild or nix", "unknown --builder %q", kind)
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

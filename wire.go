package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"kwatch/builder"
	"kwatch/guest"
	"kwatch/loop"
	"kwatch/nix"
)

// nixVM builds the flake's VM (this can take long the first time; nix shows
// its progress) and returns the VM that runs it.
func (o *options) nixVM(ctx context.Context, s setupInfo, notify func(string), log io.Writer) (*guest.VM, error) {
	out, err := buildNixVM(ctx, s, o.nixVMAttr, notify, log)
	if err != nil {
		return nil, err
	}
	return &guest.VM{
		StateDir: s.stateDir,
		Backend:  "nix",
		Ident:    gdbIdent(s.stateDir, out, notify),
		Accel:    o.accel,
		Notify:   notify,
		Launch:   nix.VMLauncher(out, s.stateDir, ""),
	}, nil
}

func buildNixVM(ctx context.Context, s setupInfo, attr string, notify func(string), log io.Writer) (string, error) {
	notify("building the VM (" + attr + ")")
	outs, err := nix.Build(ctx, s.flakeRoot+"#"+attr, filepath.Join(s.stateDir, "vm-result"), log)
	if err != nil {
		return "", fmt.Errorf("building the VM: %w", err)
	}
	if len(outs) == 0 {
		return "", fmt.Errorf("building the VM: nix build returned no output path")
	}
	return outs[0], nil
}

// newBuilder picks how the module is built and what is watched: the module
// dir for Kbuild, the whole flake for nix (so .nix edits are seen too).
func (o *options) newBuilder(s setupInfo, dir, release string, g *loop.Guest, log io.Writer) (builder.Builder, string, func(context.Context) error, error) {
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
			notify := func(msg string) { g.Report.Report(loop.Event{Type: "notice", Time: time.Now(), Message: msg}) }
			out, err := buildNixVM(ctx, s, o.nixVMAttr, notify, log)
			if err != nil {
				return err
			}
			g.Reboot(func(vm *guest.VM) bool {
				if vm.Ident == out+guest.GDBIdent {
					return false
				}
				notify("the VM's configuration changed: restarting it")
				vm.Ident, vm.Launch = out+guest.GDBIdent, nix.VMLauncher(out, s.stateDir, "")
				return true
			})
			return nil
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

// sshTarget parses --ssh [user@]host[:port] and --identity.
func sshTarget(target, identity, stateDir string) (guest.SSHConfig, error) {
	cfg := guest.SSHConfig{User: "root", KnownHosts: filepath.Join(stateDir, "known_hosts")}
	host := target
	if i := strings.LastIndex(host, "@"); i >= 0 {
		cfg.User, host = host[:i], host[i+1:]
	}
	port := "22"
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.Contains(host[i+1:], "]") {
		host, port = host[:i], host[i+1:]
		if _, err := strconv.Atoi(port); err != nil {
			return cfg, usagef("use --ssh [user@]host[:port]", "bad port in --ssh %q", target)
		}
	}
	if host == "" {
		return cfg, usagef("use --ssh [user@]host[:port]", "no host in --ssh %q", target)
	}
	cfg.Addr = host + ":" + port
	if identity == "" {
		home, _ := os.UserHomeDir()
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", name); fileExists(p) {
				identity = p
				break
			}
		}
	}
	if identity != "" {
		signer, err := guest.LoadKey(identity)
		if err != nil {
			return cfg, usagef("pass --identity with an unencrypted private key", "%v", err)
		}
		cfg.Signers = []ssh.Signer{signer}
	}
	return cfg, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

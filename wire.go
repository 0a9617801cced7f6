package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"kwatch/builder"
	"kwatch/guest"
	"kwatch/loop"
	"kwatch/nix"
	"kwatch/sshconfig"
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
		Ident:    out,
		Accel:    o.accel,
		Notify:   notify,
		Launch:   nix.VMLauncher(out, s.stateDir, ""),
	}, nil
}

func buildNixVM(ctx context.Context, s setupInfo, attr string, notify func(string), log io.Writer) (string, error) {
	installable := s.flakeRoot + "#" + attr
	// Say so before nix compiles a kernel for hours. A failed dry run says
	// nothing: the build itself reports what is wrong.
	if plan, err := nix.DryRun(ctx, installable); err == nil && plan.Kernel() != "" {
		notify(plan.Kernel())
	}
	notify("building the VM (" + attr + ")")
	outs, err := nix.Build(ctx, installable, filepath.Join(s.stateDir, "vm-result"), log)
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
		mk.EditorFiles = o.editorFiles
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
				if vm.Ident == out {
					return false
				}
				notify("the VM's configuration changed: restarting it")
				vm.Ident, vm.Launch = out, nix.VMLauncher(out, s.stateDir, "")
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

// sshTarget parses --ssh [user@]host[:port] and --identity, filling in what
// they leave open from ~/.ssh/config the way ssh does (the command line
// wins; kwatch's default user is root, as loading modules needs it). The
// user's known_hosts files are trusted besides kwatch's own.
func sshTarget(target, identity, stateDir, home string) (guest.SSHConfig, error) {
	cfg := guest.SSHConfig{KnownHosts: filepath.Join(stateDir, "known_hosts"),
		UserKnownHosts: []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}}
	host, port := target, ""
	if i := strings.LastIndex(host, "@"); i >= 0 {
		cfg.User, host = host[:i], host[i+1:]
	}
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.Contains(host[i+1:], "]") {
		host, port = host[:i], host[i+1:]
		if _, err := strconv.Atoi(port); err != nil {
			return cfg, usagef("use --ssh [user@]host[:port]", "bad port in --ssh %q", target)
		}
	}
	if host == "" {
		return cfg, usagef("use --ssh [user@]host[:port]", "no host in --ssh %q", target)
	}
	var h sshconfig.Host
	confPath := filepath.Join(home, ".ssh", "config")
	if f, err := os.Open(confPath); err == nil {
		h, err = sshconfig.Lookup(f, host)
		f.Close()
		if err != nil {
			return cfg, usagef("fix the file, or move it aside", "reading %s: %v", confPath, err)
		}
	}
	if h.HostName != "" {
		host = h.HostName
	}
	port = cmp.Or(port, h.Port, "22")
	if _, err := strconv.Atoi(port); err != nil {
		return cfg, usagef("fix the Port line of "+confPath, "bad port %q for %s in %s", port, host, confPath)
	}
	cfg.User = cmp.Or(cfg.User, h.User, "root")
	cfg.Addr = net.JoinHostPort(strings.Trim(host, "[]"), port)

	var keys []string
	switch {
	case identity != "":
		keys = []string{identity}
	case len(h.IdentityFiles) > 0:
		for _, p := range h.IdentityFiles { // ssh skips the ones that do not exist
			if p = expandHome(p, home); fileExists(p) {
				keys = append(keys, p)
			}
		}
	default:
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", name); fileExists(p) {
				keys = []string{p}
				break
			}
		}
	}
	for _, k := range keys {
		signer, err := guest.LoadKey(k)
		if err != nil {
			return cfg, usagef("pass --identity with an unencrypted private key", "%v", err)
		}
		cfg.Signers = append(cfg.Signers, signer)
	}
	return cfg, nil
}

// expandHome expands ~ and %d in an IdentityFile path, as ssh does.
func expandHome(p, home string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = home + p[1:]
	}
	return strings.ReplaceAll(strings.ReplaceAll(p, "%d", home), "%%", "%")
}

// trustNewHost runs connect. When that meets a host key no known_hosts file
// knows, the key's fingerprint is shown and the key is pinned only if the
// user accepts it (--accept-host-key with that fingerprint, or "y" at a
// prompt on a terminal), and connect runs again. A changed key is refused
// by connect itself, always.
func (o *options) trustNewHost(knownHosts string, stderr io.Writer, connect func() error) error {
	err := connect()
	var unknown *guest.UnknownHostKeyError
	if !errors.As(err, &unknown) {
		return err
	}
	fp := ssh.FingerprintSHA256(unknown.Key)
	switch {
	case o.acceptHostKey == fp:
	case o.acceptHostKey != "":
		return usagef("check the key with the host's administrator; never accept one you did not check",
			"the host key of %s is %s, not the %s given with --accept-host-key", unknown.Addr, fp, o.acceptHostKey)
	case !isTerminal(os.Stdin):
		return usagef("check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then pass --accept-host-key "+fp,
			"the host key of %s is not known (%s %s)", unknown.Addr, unknown.Key.Type(), fp)
	default:
		fmt.Fprintf(stderr, "The authenticity of host %s can't be established.\n%s key fingerprint is %s.\nPin this key in %s and connect? [y/N] ",
			unknown.Addr, unknown.Key.Type(), fp, knownHosts)
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return usagef("run again and answer y once you have checked the fingerprint", "host key of %s not accepted", unknown.Addr)
		}
	}
	if err := guest.PinHostKey(knownHosts, unknown.Addr, unknown.Key); err != nil {
		return err
	}
	return connect()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

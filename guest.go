package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/loop"
	"kwatch/machine"
	"kwatch/nix"
)

// guest wires the machine: a VM kwatch manages or an existing SSH host.
func (o *options) guest(ctx context.Context, s setupInfo, report loop.Reporter, log io.Writer) (*machine.Machine, error) {
	g := machine.Config{Report: report, BootTimeout: o.bootTimeout}
	notify := func(msg string) { loop.Notice(report, msg) }
	switch s.vm {
	case "ssh":
		cfg, err := sshTarget(o.ssh, o.identity, s.stateDir)
		if err != nil {
			return nil, err
		}
		g.SSH = cfg
	case "qemu":
		vm, err := o.qemuVM(s.stateDir, notify)
		if err != nil {
			return nil, err
		}
		g.VM = vm
	case "nix":
		vm, err := o.nixVM(ctx, s, notify, log)
		if err != nil {
			return nil, err
		}
		g.VM = vm
	}
	if g.VM != nil {
		signer, _, err := guest.LoadOrCreateKey(s.stateDir)
		if err != nil {
			return nil, err
		}
		g.SSH = guest.SSHConfig{User: "root", Signers: []ssh.Signer{signer}, KnownHosts: filepath.Join(s.stateDir, "known_hosts")}
	}
	if g.BootTimeout == 0 {
		g.BootTimeout = 2 * time.Minute
		if s.vm == "nix" {
			g.BootTimeout = 10 * time.Minute
		}
	}
	return machine.Start(ctx, g), nil
}

func (o *options) qemuVM(stateDir string, notify func(string)) (*vm.VM, error) {
	kernel := o.kernel
	if kernel == "" {
		if kernel = vm.NewestKernel(); kernel == "" {
			return nil, usagef("install a kernel image (apt-get install linux-image-amd64) or pass --kernel PATH", "no kernel image found in /boot")
		}
	}
	fi, err := os.Stat(kernel)
	if err != nil {
		return nil, usagef("pass --kernel with a bzImage/vmlinuz path", "kernel image %s: %v", kernel, errors.Unwrap(err))
	}
	ver, err := vm.KernelVersion(kernel)
	if err != nil {
		return nil, usagef("pass --kernel with a bzImage/vmlinuz path", "--kernel: %v", err)
	}
	modulesDir := o.modulesDir
	if modulesDir == "" {
		// A kernel with its NIC driver built in (like the Rust test kernel) has no modules dir.
		if _, err := os.Stat(filepath.Join("/lib/modules", ver, "kernel")); err == nil {
			modulesDir = filepath.Join("/lib/modules", ver)
		}
	} else if _, err := os.Stat(modulesDir); err != nil {
		return nil, usagef("pass the /lib/modules/<version> dir of the kernel image", "--modules-dir %s does not exist", modulesDir)
	}
	_, authKey, err := guest.LoadOrCreateKey(stateDir)
	if err != nil {
		return nil, err
	}
	hostKey, err := vm.EnsureHostKey(stateDir)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(stateDir, "initramfs.cpio.gz")
	qc := vm.QEMUConfig{Kernel: kernel, Initramfs: initrd}
	launch := qc.Launcher()
	return &vm.VM{
		StateDir: stateDir,
		Backend:  "qemu",
		Ident:    fmt.Sprintf("%s %d %d %s", kernel, fi.Size(), fi.ModTime().Unix(), modulesDir),
		Accel:    o.accel,
		Notify:   notify,
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			// The initramfs is only needed when booting, so it is written here.
			err := vm.WriteInitramfs(initrd, vm.InitramfsConfig{AuthorizedKey: authKey, HostKey: hostKey, ModulesDir: modulesDir})
			if err != nil {
				return nil, fmt.Errorf("writing the initramfs: %w", err)
			}
			return launch(port, accel)
		},
	}, nil
}

// nixVM builds the flake's VM (this can take long the first time; nix shows
// its progress) and returns the VM that runs it.
func (o *options) nixVM(ctx context.Context, s setupInfo, notify func(string), log io.Writer) (*vm.VM, error) {
	out, err := buildNixVM(ctx, s, o.nixVMAttr, notify, log)
	if err != nil {
		return nil, err
	}
	return &vm.VM{
		StateDir: s.stateDir,
		Backend:  "nix",
		Ident:    out,
		Accel:    o.accel,
		Notify:   notify,
		Launch:   nix.VMLauncher(out, s.stateDir, ""),
	}, nil
}

// relaunchNixVM rebuilds the flake's VM after a .nix edit; the machine boots
// it anew when it changed.
func (o *options) relaunchNixVM(ctx context.Context, s setupInfo, g *machine.Machine, report loop.Reporter, log io.Writer) error {
	out, err := buildNixVM(ctx, s, o.nixVMAttr, func(msg string) { loop.Notice(report, msg) }, log)
	if err != nil {
		return err
	}
	return g.Relaunch(ctx, out, nix.VMLauncher(out, s.stateDir, ""))
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

// sshConfig reaches the guest without booting one: the running managed VM
// from the state dir, or the --ssh target.
func (o *options) sshConfig(s setupInfo) (guest.SSHConfig, error) {
	if s.vm == "ssh" {
		return sshTarget(o.ssh, o.identity, s.stateDir)
	}
	st, ok, err := vm.ReadState(s.stateDir)
	if err != nil {
		return guest.SSHConfig{}, err
	}
	if _, running, _ := (&vm.VM{StateDir: s.stateDir}).Status(); !ok || !running {
		return guest.SSHConfig{}, usagef("start it with `kwatch vm up` or `kwatch DIR`", "no VM is running (state dir %s)", s.stateDir)
	}
	signer, _, err := guest.LoadOrCreateKey(s.stateDir)
	if err != nil {
		return guest.SSHConfig{}, err
	}
	return guest.SSHConfig{Addr: fmt.Sprintf("127.0.0.1:%d", st.Port), User: "root",
		Signers: []ssh.Signer{signer}, KnownHosts: filepath.Join(s.stateDir, "known_hosts")}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"kwatch/builder"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/machine"
	"kwatch/nix"
	"kwatch/sshconfig"
)

// guest wires the machine: a VM kwatch manages or an existing SSH host.
func (o *options) guest(ctx context.Context, s setupInfo, report event.Reporter, log io.Writer) (*machine.Machine, error) {
	g := machine.Config{Report: report, BootTimeout: o.bootTimeout}
	notify := func(msg string) { event.Notice(report, msg) }
	switch s.vm {
	case guest.SSH:
		home, _ := os.UserHomeDir()
		cfg, err := sshTarget(o.ssh, o.identity, s.stateDir, home)
		if err != nil {
			return nil, err
		}
		cfg.Notify = notify
		g.SSH = cfg
	case guest.QEMU:
		v, err := o.qemuVM(s.stateDir, notify)
		if err != nil {
			return nil, err
		}
		g.VM = v
	case guest.Nix:
		v, err := o.nixVM(ctx, s, notify, log)
		if err != nil {
			return nil, err
		}
		g.VM = v
	}
	if g.VM != nil {
		cfg, err := managedSSH(s.stateDir, s.vm)
		if err != nil {
			return nil, err
		}
		cfg.Notify = notify
		g.SSH = cfg
	}
	g.SSH.UploadRecord = filepath.Join(s.stateDir, "uploads.json")
	if g.BootTimeout == 0 {
		g.BootTimeout = 2 * time.Minute
		if s.vm == guest.Nix {
			g.BootTimeout = 10 * time.Minute
		}
	}
	return machine.Start(ctx, g), nil
}

// qemuKernel checks --kernel (default: the newest installed) and
// --modules-dir (default: the kernel's own, when it has modules).
func (o *options) qemuKernel() (bootKernel, error) {
	k := bootKernel{image: o.kernel, modulesDir: o.modulesDir}
	if k.image == "" {
		if k.image = vm.NewestKernel(); k.image == "" {
			return k, usagef("install a kernel image (apt-get install linux-image-amd64) or pass --kernel PATH", "no kernel image found in /boot")
		}
	}
	var err error
	if k.info, err = os.Stat(k.image); err != nil {
		return k, usagef("pass --kernel with a bzImage/vmlinuz path", "kernel image %s: %v", k.image, errors.Unwrap(err))
	}
	ver, err := vm.KernelVersion(k.image)
	if err != nil {
		return k, usagef("pass --kernel with a bzImage/vmlinuz path", "--kernel: %v", err)
	}
	if k.modulesDir == "" {
		if k.modulesDir = vm.ModulesDir(ver); k.modulesDir == "" {
			// A kernel with its NIC driver built in (like the Rust test kernel) has
			// no modules dir; one whose configuration beside it says the driver is
			// a module lacks its modules.
			if config, err := os.ReadFile(filepath.Join(filepath.Dir(k.image), "config-"+ver)); err == nil && builder.ParseKconfig(config)["CONFIG_"+strings.ToUpper(vm.NICModule)] == "m" {
				return k, usagef("install linux-image-"+ver+" (its modules), or pass --modules-dir", "kernel %s has no modules in /lib/modules/%s/kernel, and its network driver is a module", k.image, ver)
			}
		}
	} else if _, err := os.Stat(k.modulesDir); err != nil {
		return k, usagef("pass the /lib/modules/<version> dir of the kernel image", "--modules-dir %s does not exist", k.modulesDir)
	}
	return k, nil
}

// bootKernel is the kernel a --vm qemu guest boots.
type bootKernel struct {
	image      string
	info       os.FileInfo
	modulesDir string
}

func (o *options) qemuVM(stateDir string, notify func(string)) (*vm.Process, error) {
	k, err := o.qemuKernel()
	if err != nil {
		return nil, err
	}
	_, authKey, err := ssh.LoadOrCreateKey(stateDir)
	if err != nil {
		return nil, err
	}
	hostKey, err := vm.EnsureHostKey(stateDir)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(stateDir, "initramfs.cpio.gz")
	qc := vm.QEMUConfig{Kernel: k.image, Initramfs: initrd, GDBSocket: vm.GDBSocket(stateDir), ModulesDir: k.modulesDir}
	launch := qc.Launcher()
	return &vm.Process{
		StateDir: stateDir,
		Kind:     guest.QEMU,
		Kernel:   k.image,
		Ident:    gdbIdent(stateDir, fmt.Sprintf("%s %d %d %s shared", k.image, k.info.Size(), k.info.ModTime().Unix(), k.modulesDir), notify),
		Accel:    o.accel,
		Notify:   notify,
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			// The initramfs is only needed when booting, so it is written here.
			err := vm.WriteInitramfs(initrd, vm.InitramfsConfig{AuthorizedKey: authKey, HostKey: hostKey, ModulesDir: k.modulesDir})
			if err != nil {
				return nil, fmt.Errorf("writing the initramfs: %w", err)
			}
			return launch(port, accel)
		},
	}, nil
}

// nixVM builds the flake's VM (this can take long the first time; nix shows
// its progress) and returns the VM that runs it.
func (o *options) nixVM(ctx context.Context, s setupInfo, notify func(string), log io.Writer) (*vm.Process, error) {
	out, err := o.buildNixVM(ctx, s, notify, log)
	if err != nil {
		return nil, err
	}
	return &vm.Process{
		StateDir: s.stateDir,
		Kind:     guest.Nix,
		Ident:    gdbIdent(s.stateDir, out, notify),
		Accel:    o.accel,
		Notify:   notify,
		Launch:   nix.VMLauncher(out, s.stateDir, ""),
	}, nil
}

// relaunchNixVM rebuilds the flake's VM after a .nix edit; the machine boots
// it anew when it changed.
func (o *options) relaunchNixVM(ctx context.Context, s setupInfo, g *machine.Machine, report event.Reporter, log io.Writer) error {
	out, err := o.buildNixVM(ctx, s, func(msg string) { event.Notice(report, msg) }, log)
	if err != nil {
		return err
	}
	return g.Relaunch(ctx, out+vm.GDBIdent, nix.VMLauncher(out, s.stateDir, ""))
}

func (o *options) buildNixVM(ctx context.Context, s setupInfo, notify func(string), log io.Writer) (string, error) {
	attr := o.nixVMAttr
	installable := s.flakeRoot + "#" + attr
	// Say so before nix compiles a kernel for hours. A failed dry run says
	// nothing: the build itself reports what is wrong.
	if plan, err := o.nixSettings().DryRun(ctx, installable); err == nil && plan.Kernel() != "" {
		notify(plan.Kernel())
	}
	notify("building the VM (" + attr + ")")
	// The first build may fetch or compile a kernel: show where it is.
	progress := &nix.Progress{W: log}
	if f, ok := log.(*os.File); ok {
		progress.Terminal = isTerminal(f)
	}
	outs, err := o.nixSettings().Build(ctx, installable, filepath.Join(s.stateDir, "vm-result"), progress)
	if err != nil {
		return "", fmt.Errorf("building the VM: %w", err)
	}
	if len(outs) == 0 {
		return "", fmt.Errorf("building the VM: nix build returned no output path")
	}
	return outs[0], nil
}

// sshTarget parses --ssh [user@]host[:port] and --identity, filling in what
// they leave open from ~/.ssh/config the way ssh does (the command line
// wins; kwatch's default user is root, as loading modules needs it). The
// user's known_hosts files are trusted besides kwatch's own.
func sshTarget(target, identity, stateDir, home string) (ssh.Config, error) {
	cfg := ssh.Config{KnownHosts: filepath.Join(stateDir, "known_hosts"),
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
		signer, err := ssh.LoadKey(k)
		if err != nil {
			return cfg, usagef("pass --identity with an unencrypted private key", "%v", err)
		}
		cfg.Signers = append(cfg.Signers, signer)
	}
	return cfg, nil
}

// sshConfig reaches the guest without booting one: the running managed VM
// from the state dir, or the --ssh target.
func (o *options) sshConfig(s setupInfo) (ssh.Config, error) {
	if s.vm == guest.SSH {
		home, _ := os.UserHomeDir()
		return sshTarget(o.ssh, o.identity, s.stateDir, home)
	}
	st, ok, err := vm.ReadState(s.stateDir)
	if err != nil {
		return ssh.Config{}, err
	}
	if _, running, _ := (&vm.Process{StateDir: s.stateDir}).Status(); !ok || !running {
		return ssh.Config{}, usagef("start it with `kwatch vm up` or `kwatch DIR`", "no VM is running (state dir %s)", s.stateDir)
	}
	cfg, err := managedSSH(s.stateDir, st.Kind)
	cfg.Addr = fmt.Sprintf("127.0.0.1:%d", st.Port)
	return cfg, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
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
	var unknown *ssh.UnknownHostKeyError
	if !errors.As(err, &unknown) {
		return err
	}
	fp := xssh.FingerprintSHA256(unknown.Key)
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
	if err := ssh.PinHostKey(knownHosts, unknown.Addr, unknown.Key); err != nil {
		return err
	}
	return connect()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// managedSSH is how kwatch logs into a VM it manages (Addr comes from the
// VM's state). The qemu backend's guest gets host keys kwatch made, so
// exactly those are pinned; a NixOS VM makes its own, pinned on first use.
func managedSSH(stateDir string, kind guest.Kind) (ssh.Config, error) {
	signer, _, err := ssh.LoadOrCreateKey(stateDir)
	if err != nil {
		return ssh.Config{}, err
	}
	// kwatch started the VM, so a NixOS VM's first host key is trusted.
	cfg := ssh.Config{User: "root", Signers: []xssh.Signer{signer}, KnownHosts: filepath.Join(stateDir, "known_hosts"), TrustNew: true}
	if kind == guest.QEMU {
		if cfg.HostKeys, err = vm.HostPublicKeys(stateDir); err != nil {
			return ssh.Config{}, err
		}
	}
	return cfg, nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"kwatch/guest"
	"kwatch/loop"
	"kwatch/nix"
)

// options holds every flag; the VM flags are shared by `kwatch` and `kwatch vm`.
type options struct {
	vm, kernel, modulesDir, ssh, identity, stateDir, accel string
	bootTimeout                                            time.Duration
	nixVMAttr                                              string

	kdir, params, builder, nixMode, moduleAttr, rustc string
	run                                               multiFlag
	once, json                                        bool
	debounce                                          time.Duration
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (o *options) vmFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.vm, "vm", "", "qemu|nix|ssh: the guest (default: nix when a flake.nix is at or above DIR, else qemu)")
	fs.StringVar(&o.kernel, "kernel", "", "kernel image for --vm qemu (default: the newest /boot/vmlinuz-*)")
	fs.StringVar(&o.modulesDir, "modules-dir", "", "/lib/modules/<version> tree holding the NIC driver for the generated initramfs (default: from the kernel image's version)")
	fs.StringVar(&o.ssh, "ssh", "", "[user@]host[:port] of an existing guest for --vm ssh")
	fs.StringVar(&o.identity, "identity", "", "SSH private key for --vm ssh")
	fs.StringVar(&o.stateDir, "state-dir", "", "where kwatch keeps keys, logs and VM state (default: .kwatch in the flake root, else in the current directory)")
	fs.StringVar(&o.accel, "accel", "auto", "auto|kvm|tcg")
	fs.DurationVar(&o.bootTimeout, "boot-timeout", 0, "how long to wait for the guest's SSH (default 2m, 10m for --vm nix)")
	fs.StringVar(&o.nixVMAttr, "nix-vm-attr", "nixosConfigurations.vm.config.system.build.vm", "flake attribute of the VM for --vm nix")
}

func (o *options) watchFlags(fs *flag.FlagSet) {
	o.vmFlags(fs)
	fs.StringVar(&o.kdir, "kdir", "", "kernel build dir for Kbuild (default /lib/modules/<guest uname -r>/build)")
	fs.StringVar(&o.params, "params", "", `insmod parameters, e.g. "a=1 b=x"`)
	fs.Var(&o.run, "run", "run `CMD` in the guest after every successful load (repeatable)")
	fs.BoolVar(&o.once, "once", false, "build, load, run the --run commands once and exit (0 ok, 1 failed)")
	fs.BoolVar(&o.json, "json", false, "one JSON event per line on stdout")
	fs.StringVar(&o.builder, "builder", "", "kbuild|nix (default: nix when --vm nix, else kbuild)")
	fs.StringVar(&o.nixMode, "nix-mode", "incremental", "incremental|derivation for --builder nix")
	fs.StringVar(&o.moduleAttr, "module-attr", "module", "flake attribute of the module for --builder nix")
	fs.StringVar(&o.rustc, "rustc", "", "rustc for Rust modules (default: the one the kernel tree was built with)")
	fs.DurationVar(&o.debounce, "debounce", 75*time.Millisecond, "quiet period that closes a batch of file changes")
}

// parseInterleaved parses flags that may come before or after positional
// arguments (`kwatch DIR --once` as well as `kwatch --once DIR`). Everything
// after a "--" is positional, flags or not (`kwatch vm ssh -- grep -c x f`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

const watchUsage = `usage: kwatch [flags] [DIR]        watch DIR (the module source), build, load, stream the kernel log
       kwatch vm up|down|status [flags]
       kwatch vm ssh [flags] -- CMD
       kwatch init [--force] [DIR]
       kwatch gdb [flags] [DIR] [-- GDB_ARGS...]
flags:
`

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlagSet("kwatch", stderr, watchUsage)
	o.watchFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 1 {
		return usagef("kwatch watches one module directory", "too many arguments: %s", strings.Join(pos, " "))
	}
	dir := "."
	if len(pos) == 1 {
		dir = pos[0]
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return usagef("pass the directory holding the module's Makefile/Kbuild", "%s is not a directory", dir)
	}
	if o.debounce <= 0 {
		return usagef("use something like --debounce 75ms", "--debounce must be positive")
	}
	setup, err := o.setup(dir)
	if err != nil {
		return err
	}

	var (
		report   loop.Reporter
		buildLog io.Writer
	)
	if o.json {
		report, buildLog = loop.NewJSON(stdout), stderr
	} else {
		h := loop.NewHuman(stdout)
		report, buildLog = h, h.BuildLog()
	}
	g, err := o.guest(ctx, setup, report, stderr)
	if err != nil {
		return err
	}
	defer g.Close()
	// Connect first: the default --kdir comes from the guest's kernel release.
	_, release, err := g.Connect(ctx)
	if err != nil {
		return err
	}
	b, watchRoot, configChanged, err := o.newBuilder(setup, dir, release, g, stderr)
	if err != nil {
		return err
	}
	err = loop.Run(ctx, loop.Config{
		Dir:           watchRoot,
		Ignore:        []string{relIgnore(watchRoot, setup.stateDir)},
		Quiet:         o.debounce,
		Builder:       b,
		Guest:         g,
		Params:        strings.Fields(o.params),
		Run:           o.run,
		Once:          o.once,
		Report:        report,
		BuildLog:      buildLog,
		StateDir:      setup.stateDir,
		ConfigChanged: configChanged,
	})
	if g.VM != nil && !o.once {
		report.Report(loop.Event{Type: "notice", Time: time.Now(),
			Message: "the VM keeps running for the next run; `kwatch vm down` stops it"})
	}
	return err
}

// relIgnore turns the state dir into an ignore pattern when it lies inside the watched tree.
func relIgnore(root, stateDir string) string {
	rel, err := filepath.Rel(root, stateDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	return "/" + filepath.ToSlash(rel) + "/"
}

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

// guest wires the machine: a VM kwatch manages or an existing SSH host.
func (o *options) guest(ctx context.Context, s setupInfo, report loop.Reporter, log io.Writer) (*loop.Guest, error) {
	g := &loop.Guest{Report: report, BootTimeout: o.bootTimeout}
	notify := func(msg string) { report.Report(loop.Event{Type: "notice", Time: time.Now(), Message: msg}) }
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
	return g, nil
}

func (o *options) qemuVM(stateDir string, notify func(string)) (*guest.VM, error) {
	kernel := o.kernel
	if kernel == "" {
		imgs, _ := filepath.Glob("/boot/vmlinuz-*")
		if len(imgs) == 0 {
			return nil, usagef("install a kernel image (apt-get install linux-image-amd64) or pass --kernel PATH", "no kernel image found in /boot")
		}
		sort.Strings(imgs)
		kernel = imgs[len(imgs)-1]
	}
	fi, err := os.Stat(kernel)
	if err != nil {
		return nil, usagef("pass --kernel with a bzImage/vmlinuz path", "kernel image %s: %v", kernel, errors.Unwrap(err))
	}
	ver, err := guest.KernelVersion(kernel)
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
	hostKey, err := guest.EnsureHostKey(stateDir)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(stateDir, "initramfs.cpio.gz")
	qc := guest.QEMUConfig{Kernel: kernel, Initramfs: initrd, GDBSocket: guest.GDBSocket(stateDir)}
	launch := qc.Launcher()
	return &guest.VM{
		StateDir: stateDir,
		Backend:  "qemu",
		Ident:    gdbIdent(stateDir, fmt.Sprintf("%s %d %d %s", kernel, fi.Size(), fi.ModTime().Unix(), modulesDir), notify),
		Accel:    o.accel,
		Notify:   notify,
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			// The initramfs is only needed when booting, so it is written here.
			err := guest.WriteInitramfs(initrd, guest.InitramfsConfig{AuthorizedKey: authKey, HostKey: hostKey, ModulesDir: modulesDir})
			if err != nil {
				return nil, fmt.Errorf("writing the initramfs: %w", err)
			}
			return launch(port, accel)
		},
	}, nil
}

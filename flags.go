package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// options holds every flag; the VM flags are shared by `kwatch` and `kwatch vm`.
// A flag's argument named in backquotes (`DIR`, `FILE`) and a usage that
// starts with its choices (a|b|c) tell the completion scripts what to offer.
type options struct {
	vm, kernel, modulesDir, ssh, identity, stateDir, accel string
	acceptHostKey                                          string
	bootTimeout                                            time.Duration
	nixVMAttr, builders                                    string

	kdir, params, builder, nixMode, moduleAttr, rustc string
	module                                            string
	run                                               multiFlag
	once, json, editorFiles, version                  bool
	debounce, runTimeout                              time.Duration

	force bool   // init
	name  string // init
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ", ") }

func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (o *options) vmFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.vm, "vm", "", "qemu|nix|ssh: the guest (default: nix when a flake.nix is at or above DIR, else qemu)")
	o.kernelFlags(fs)
	fs.StringVar(&o.ssh, "ssh", "", "[user@]host[:port] of an existing guest for --vm ssh")
	fs.StringVar(&o.identity, "identity", "", "SSH private key `FILE` for --vm ssh (default: IdentityFile in ~/.ssh/config, else ~/.ssh/id_*)")
	fs.StringVar(&o.acceptHostKey, "accept-host-key", "", "`SHA256:...` fingerprint of the --vm ssh host's key to accept on first contact (on a terminal kwatch asks instead)")
	fs.StringVar(&o.stateDir, "state-dir", "", "`DIR` where kwatch keeps keys, logs and VM state (default: .kwatch in the flake root, else in the current directory)")
	fs.StringVar(&o.accel, "accel", "auto", "auto|kvm|tcg")
	fs.DurationVar(&o.bootTimeout, "boot-timeout", 0, "how long to wait for the guest's SSH (default 2m, 10m for --vm nix)")
	fs.StringVar(&o.nixVMAttr, "nix-vm-attr", "nixosConfigurations.vm.config.system.build.vm", "flake attribute of the VM for --vm nix")
}

// buildFlags are the VM flags of the subcommands that may build one (kwatch
// DIR, kwatch vm), and what nix builds with.
func (o *options) buildFlags(fs *flag.FlagSet) {
	o.vmFlags(fs)
	fs.StringVar(&o.builders, "builders", "", "nix remote builders for every nix command kwatch runs, passed as nix's --builders (default: the builders setting of nix.conf)")
}

// kernelFlags say which kernel --vm qemu boots; kwatch doctor takes them too.
func (o *options) kernelFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kernel, "kernel", "", "kernel image `FILE` for --vm qemu (default: the newest /boot/vmlinuz-*)")
	fs.StringVar(&o.modulesDir, "modules-dir", "", "/lib/modules/<version> `DIR` holding the NIC driver for the generated initramfs (default: from the kernel image's version)")
}

func (o *options) watchFlags(fs *flag.FlagSet) {
	o.buildFlags(fs)
	fs.StringVar(&o.kdir, "kdir", "", "kernel build `DIR` for Kbuild (default /lib/modules/<guest uname -r>/build)")
	fs.StringVar(&o.params, "params", "", `insmod parameters, e.g. "a=1 b=x"`)
	fs.Var(&o.run, "run", "run `CMD` in the guest after every successful load (repeatable); a new save stops it")
	fs.DurationVar(&o.runTimeout, "run-timeout", time.Minute, "kill a --run command still running after this long, and count it as failed (0: no limit)")
	fs.BoolVar(&o.once, "once", false, "build, load, run the --run commands once and exit (0 ok, 1 failed)")
	fs.BoolVar(&o.json, "json", false, "one JSON event per line on stdout")
	fs.StringVar(&o.builder, "builder", "", "kbuild|nix (default: nix when --vm nix, else kbuild)")
	fs.StringVar(&o.nixMode, "nix-mode", "incremental", "incremental|derivation for --builder nix")
	fs.StringVar(&o.moduleAttr, "module-attr", "module", "flake attribute of the module for --builder nix")
	fs.StringVar(&o.rustc, "rustc", "", "rustc `FILE` for Rust modules (default: the one the kernel tree was built with)")
	fs.DurationVar(&o.debounce, "debounce", 75*time.Millisecond, "quiet period that closes a batch of file changes")
	fs.StringVar(&o.module, "module", "", "the module to load when obj-m builds several (default: the first in modules.order)")
	fs.BoolVar(&o.editorFiles, "editor-files", true, "write compile_commands.json (C) or rust-project.json (Rust) into the module dir after each full Kbuild build")
	fs.BoolVar(&o.version, "version", false, "print kwatch's module version and VCS revision, and exit")
}

func (o *options) gdbFlags(fs *flag.FlagSet) {
	o.vmFlags(fs)
	fs.StringVar(&o.kdir, "kdir", "", "kernel build `DIR` whose vmlinux has the kernel's symbols (default /lib/modules/<guest uname -r>/build)")
}

func (o *options) initFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.force, "force", false, "overwrite existing files")
	fs.StringVar(&o.name, "name", "", "module name (default: the directory's name)")
}

// dirArg is the one optional DIR argument a subcommand takes ("." when
// none); usage says how to call it when there are more.
func dirArg(pos []string, usage string) (string, error) {
	switch len(pos) {
	case 0:
		return ".", nil
	case 1:
		return pos[0], nil
	}
	return "", usagef(usage, "too many arguments: %s", strings.Join(pos, " "))
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

// newFlagSet returns a flag set that prints nothing itself: parseFlags says
// what went wrong in one line, and prints the flags only when asked (-h).
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args as parseInterleaved does. -h prints usage and the
// flags to stderr (flag.ErrHelp, exit 0); a bad flag is a usage error (exit
// 2), one line with a hint, without the flag list.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, usage string) ([]string, error) {
	pos, err := parseInterleaved(fs, args)
	switch {
	case err == flag.ErrHelp:
		fmt.Fprint(stderr, usage)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return nil, err
	case err != nil:
		return nil, usagef(fmt.Sprintf("run `%s -h` for the flags", fs.Name()), "%v", err)
	}
	return pos, nil
}

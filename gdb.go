package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"kwatch/builder"
	"kwatch/debugger"
	"kwatch/debuginfo"
	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/machine"
)

const gdbUsage = `usage: kwatch gdb [flags] [DIR] [-- GDB_ARGS...]
runs gdb attached to the guest, with the symbols of the module kwatch loaded from DIR
(and of the kernel when the kernel build dir has a vmlinux); GDB_ARGS go to gdb unchanged
flags:
`

func runGDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var gdbArgs []string
	for i, a := range args {
		if a == "--" {
			args, gdbArgs = args[:i], args[i+1:]
			break
		}
	}
	var o options
	fs := newFlagSet("kwatch gdb")
	o.gdbFlags(fs)
	pos, err := parseFlags(fs, args, stderr, gdbUsage)
	if err != nil {
		return err
	}
	dir, err := dirArg(pos, "kwatch gdb [DIR] -- GDB_ARGS (gdb's arguments go after --)")
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	s, err := o.setup(dir)
	if err != nil {
		return err
	}
	if s.vm == guest.SSH {
		return usagef("use --vm qemu or --vm nix", "kwatch gdb attaches to the gdbstub of a VM kwatch started, not to an --ssh machine")
	}
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		return usagef("install it: apt-get install gdb (scripts/setup.sh does)", "gdb not found")
	}
	sock := vm.GDBSocket(s.stateDir)
	c, err := machine.Dial(ctx, s.vm, o.machineOptions(s, nil, nil, nil), func() error {
		if _, err := os.Stat(sock); err != nil {
			return usagef("restart it: `kwatch vm down`, then run kwatch again", "the VM has no gdb socket (%s): an older kwatch started it", sock)
		}
		if pid := vm.DebuggerPID(s.stateDir); pid != 0 {
			return usagef("quit that gdb first: the stub takes one client", "a kwatch gdb session (pid %d) is already attached", pid)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.Close()
	out, _, _, err := c.Run(ctx, "uname -r")
	if err != nil {
		return fmt.Errorf("asking the guest for its kernel release: %w", err)
	}
	release := strings.TrimSpace(string(out))
	notice := func(msg string) { fmt.Fprintf(stderr, "kwatch: %s\n", msg) }

	kdir := o.kdir
	if kdir == "" {
		kdir = filepath.Join("/lib/modules", release, "build")
	}
	// The build dir's, else where Debian's linux-image-RELEASE-dbg puts one.
	vmlinux := ""
	for _, p := range []string{filepath.Join(kdir, "vmlinux"), filepath.Join("/usr/lib/debug/boot", "vmlinux-"+release)} {
		if debuginfo.HasSymbols(p) {
			vmlinux = p
			break
		}
	}
	if vmlinux == "" {
		notice(fmt.Sprintf("no vmlinux with symbols in %s or /usr/lib/debug/boot (Debian's kernels ship none, or one with only BTF; apt-get install linux-image-%s-dbg has one): kernel functions show as addresses", kdir, release))
	}
	done, err := vm.MarkDebugger(s.stateDir, os.Getpid())
	if err != nil {
		return err
	}
	defer done()
	sess := &debugger.Session{
		GDB: gdb, Socket: sock, StateDir: s.stateDir, Guest: c,
		Modules: func() []debugger.Module { return gdbModules(dir, s.stateDir) },
		Vmlinux: vmlinux, Args: gdbArgs,
		DialStub: func() (debugger.Stub, error) { return vm.DialStub(sock) },
		Stdin:    os.Stdin, Stdout: stdout, Stderr: stderr, Notice: notice,
	}
	code, err := sess.Run(ctx)
	// gdb detaches when it quits; one killed by a signal (code -1) may have
	// left the guest stopped. A quit gdb is not followed up: each stop and
	// resume of the guest is one more chance to upset its timers.
	if code < 0 {
		if rerr := vm.ResumeGDB(sock); rerr != nil && err == nil {
			err = rerr
		} else if rerr == nil {
			notice("gdb was killed before it detached: the guest runs on")
		}
		code = 1
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// gdbModules lists the builds the module loaded from dir may be: the .ko
// files Kbuild left in the module's directory, then the copies of the last
// good modules kwatch keeps in the state dir (all it has with the nix
// builder), limited to the names built in dir when there are any. The
// session takes the one whose build ID is the guest's.
func gdbModules(dir, stateDir string) []debugger.Module {
	var own, kept []debugger.Module
	if src, err := moduleSrc(dir); err == nil {
		own = readModules(src)
	}
	kept = readModules(filepath.Join(stateDir, "last-good"))
	if len(own) == 0 {
		return kept
	}
	mods := own
	for _, k := range kept {
		for _, m := range own {
			if m.Name == k.Name {
				mods = append(mods, k)
				break
			}
		}
	}
	return mods
}

func readModules(dir string) []debugger.Module {
	kos, _ := filepath.Glob(filepath.Join(dir, "*.ko"))
	var mods []debugger.Module
	for _, ko := range kos {
		if info, err := builder.ReadModinfo(ko); err == nil {
			mods = append(mods, debugger.Module{Name: info.Name, KO: ko})
		}
	}
	return mods
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/loop"
	"kwatch/nix"
)

const vmUsage = `usage: kwatch vm up|down|status [flags]   start / stop / describe the guest
       kwatch vm ssh [flags] -- CMD        run CMD in the guest, exit with its status
flags:
`

func runVM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vmUsage)
		return usagef("", "kwatch vm needs a subcommand: up, down, status or ssh")
	}
	sub := args[0]
	var o options
	fs := newFlagSet("kwatch vm "+sub, stderr, vmUsage)
	o.vmFlags(fs)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return flagErr(err)
	}
	cwd, _ := os.Getwd()
	s, err := o.setup(cwd)
	if err != nil {
		return err
	}
	switch sub {
	case "up":
		if s.vm == "ssh" {
			return usagef("kwatch only starts VMs it manages: --vm qemu or --vm nix", "vm up with --vm ssh")
		}
		g, err := o.guest(ctx, s, loop.NewHuman(stdout), stderr)
		if err != nil {
			return err
		}
		defer g.Close()
		_, err = g.Session(ctx)
		return err
	case "down":
		st, ok, err := vm.ReadState(s.stateDir)
		if err != nil {
			return err
		}
		if err := (&vm.VM{StateDir: s.stateDir}).Down(); err != nil {
			return err
		}
		if ok {
			fmt.Fprintf(stdout, "stopped the %s VM (pid %d)\n", st.Backend, st.PID)
		} else {
			fmt.Fprintln(stdout, "no VM was running")
		}
		return nil
	case "status":
		st, ok, err := vm.ReadState(s.stateDir)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(stdout, "no VM (state dir %s)\n", s.stateDir)
			return nil
		}
		_, running, _ := (&vm.VM{StateDir: s.stateDir}).Status()
		state := "stopped"
		if running {
			state = fmt.Sprintf("running for %s", time.Since(st.Started).Round(time.Second))
		}
		fmt.Fprintf(stdout, "%s VM %s\n  pid %d, ssh 127.0.0.1:%d, accel %s\n  console log %s\n",
			st.Backend, state, st.PID, st.Port, st.Accel, st.ConsoleLog)
		return nil
	case "ssh":
		if len(pos) == 0 {
			return usagef("kwatch vm ssh -- CMD", "no command given")
		}
		cfg, err := o.sshConfig(s)
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := guest.Dial(dctx, cfg)
		if err != nil {
			return fmt.Errorf("connecting to the guest at %s: %w", cfg.Addr, err)
		}
		defer c.Close()
		exit, err := c.RunStream(ctx, strings.Join(pos, " "), stdout, stderr)
		if err != nil {
			return err
		}
		if exit != 0 {
			return &exitError{code: exit}
		}
		return nil
	}
	return usagef("use up, down, status or ssh", "unknown vm subcommand %q", sub)
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

const initUsage = `usage: kwatch init [--force] [--name NAME] [DIR]
writes a flake project (NixOS VM with a Rust kernel, module.nix, src/ with a Rust module) into DIR
flags:
`

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("kwatch init", stderr, initUsage)
	force := fs.Bool("force", false, "overwrite existing files")
	name := fs.String("name", "", "module name (default: the directory's name)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagErr(err)
	}
	dir := "."
	switch len(pos) {
	case 0:
	case 1:
		dir = pos[0]
	default:
		return usagef("kwatch init [DIR]", "too many arguments: %s", strings.Join(pos, " "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	stateDir := filepath.Join(dir, ".kwatch")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("creating the state dir: %w", err)
	}
	_, authKey, err := guest.LoadOrCreateKey(stateDir)
	if err != nil {
		return err
	}
	written, err := nix.Init(dir, nix.InitOptions{Name: *name, AuthorizedKey: strings.TrimSpace(string(authKey)), Force: *force})
	if err != nil {
		return usagef("", "%v", err)
	}
	for _, f := range written {
		fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(dir, f))
	}
	// Flakes in a git repository only see tracked files; a fresh repo with
	// everything added keeps .kwatch (the VM's disk) out of every nix build.
	if err := exec.Command("git", "-C", dir, "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		git := exec.Command("sh", "-c", "git init -q && git add -A")
		git.Dir = dir
		if out, err := git.CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "kwatch: could not create a git repository in %s: %s\n", dir, strings.TrimSpace(string(out)))
		} else {
			fmt.Fprintf(stdout, "created a git repository with every file added (nix flakes only see tracked files)\n")
		}
	}
	fmt.Fprintf(stdout, "next: cd %s && kwatch   (the first run builds the NixOS VM and its kernel: this takes a while)\n", dir)
	return nil
}

// flagErr turns the flag package's errors into usage errors (exit 2); it has
// already printed the details.
func flagErr(err error) error {
	if err == flag.ErrHelp {
		return err
	}
	return usagef("run kwatch -h for the flags", "%v", err)
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/loop"
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

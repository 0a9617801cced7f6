package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/statedir"
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
	fs := newFlagSet("kwatch vm " + sub)
	o.buildFlags(fs)
	if strings.HasPrefix(sub, "-") { // kwatch vm -h, or flags before the subcommand
		fs = newFlagSet("kwatch vm")
		o.buildFlags(fs)
		if _, err := parseFlags(fs, args, stderr, vmUsage); err != nil {
			return err
		}
		return usagef("kwatch vm up|down|status|ssh [flags]", "the subcommand goes first: kwatch vm %s", sub)
	}
	pos, err := parseFlags(fs, args[1:], stderr, vmUsage)
	if err != nil {
		return err
	}
	cwd, _ := os.Getwd()
	s, err := o.setup(cwd)
	if err != nil {
		return err
	}
	switch sub {
	case "up":
		if s.vm == guest.SSH {
			return usagef("kwatch only starts VMs it manages: --vm qemu or --vm nix", "vm up with --vm ssh")
		}
		if err := o.checkStart(ctx, s); err != nil {
			return err
		}
		lock, err := lockState(s.stateDir)
		if err != nil {
			return err
		}
		defer lock.Release()
		g, err := o.guest(ctx, s, event.NewHuman(stdout), stderr)
		if err != nil {
			return err
		}
		defer g.Close()
		_, err = g.Session(ctx)
		return err
	case "down":
		// Without a record there is nothing to stop, and nothing to create.
		st, ok, err := vm.ReadState(s.stateDir)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintln(stdout, "no VM was running")
			return nil
		}
		lock, err := lockState(s.stateDir)
		if err != nil {
			return err
		}
		defer lock.Release()
		stale := vm.Verify(st)
		if err := (&vm.Process{StateDir: s.stateDir}).Down(); err != nil {
			return err
		}
		if stale != nil {
			fmt.Fprintf(stdout, "removed a stale VM record (%v); signalled nothing\n", stale)
		} else {
			fmt.Fprintf(stdout, "stopped the %s VM (pid %d)\n", st.Kind, st.PID)
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
		if stale := vm.Verify(st); stale != nil {
			fmt.Fprintf(stdout, "no VM: the record in %s is stale (%v)\n", s.stateDir, stale)
			// Only the lock's holder may touch the record: a kwatch holding
			// it may be writing a new one right now.
			if lock, err := statedir.Acquire(s.stateDir); err == nil {
				defer lock.Release()
				if err := (&vm.Process{StateDir: s.stateDir}).Down(); err != nil {
					return err
				}
				fmt.Fprintln(stdout, "removed the stale record; signalled nothing")
			}
			return nil
		}
		fmt.Fprintf(stdout, "%s VM running for %s\n  pid %d, ssh 127.0.0.1:%d, accel %s\n  console log %s\n",
			st.Kind, time.Since(st.Started).Round(time.Second), st.PID, st.Port, st.Accel, st.ConsoleLog)
		return nil
	case "ssh":
		if len(pos) == 0 {
			return usagef("kwatch vm ssh -- CMD", "no command given")
		}
		if s.vm == guest.SSH { // known_hosts goes there
			if err := statedir.Create(s.stateDir); err != nil {
				return stateErr(err)
			}
		}
		cfg, err := o.sshConfig(s)
		if err != nil {
			return err
		}
		cfg.Notify = func(msg string) { fmt.Fprintln(stderr, "kwatch: "+msg) }
		var c *ssh.Client
		err = o.trustNewHost(cfg.KnownHosts, stderr, func() (err error) {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err = ssh.Dial(dctx, cfg)
			return err
		})
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

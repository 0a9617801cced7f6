package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"kwatch/event"
	"kwatch/machine"
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
		if !s.vm.Managed() {
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
		g, err := machine.Open(ctx, s.vm, o.machineOptions(s, event.NewHuman(stdout), stderr, stderr))
		if err != nil {
			return err
		}
		defer g.Close()
		_, err = g.Session(ctx)
		return err
	case "down":
		return stateErr(machine.Down(s.stateDir, stdout))
	case "status":
		return machine.Status(s.stateDir, stdout)
	case "ssh":
		if len(pos) == 0 {
			return usagef("kwatch vm ssh -- CMD", "no command given")
		}
		c, err := machine.Dial(ctx, s.vm, o.machineOptions(s, nil, nil, stderr), nil)
		if err != nil {
			return stateErr(err)
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

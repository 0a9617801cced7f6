package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"

	"kwatch/doctor"
	"kwatch/guest"
	"kwatch/loop"
	"kwatch/machine"
)

const doctorUsage = `usage: kwatch doctor [--json] [--kernel FILE] [--kdir DIR] [--modules-dir DIR]
what this host has of what kwatch relies on, what each kernel in /boot (and the one the flags
name) can do with kwatch, and the one command that closes each gap.
Exit 0 when ` + "`kwatch DIR`" + ` would work with these flags, 1 when it would not.
flags:
`

func (o *options) doctorFlags(fs *flag.FlagSet) {
	o.kernelFlags(fs)
	fs.StringVar(&o.kdir, "kdir", "", "a kernel build `DIR` to check too (with --kernel: that kernel's)")
	fs.StringVar(&o.builders, "builders", "", "nix remote builders, as for kwatch DIR: doctor shows what nix makes of them")
	fs.BoolVar(&o.json, "json", false, "the report as one JSON object")
}

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlagSet("kwatch doctor")
	o.doctorFlags(fs)
	pos, err := parseFlags(fs, args, stderr, doctorUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kwatch doctor takes flags only", "unexpected arguments: %v", pos)
	}
	if o.kernel != "" {
		if err := machine.Check(guest.QEMU, machine.Options{Kernel: o.kernel, ModulesDir: o.modulesDir}); err != nil {
			return err
		}
	}
	r := doctor.Run(ctx, doctor.Options{Kernel: o.kernel, KDir: o.kdir, ModulesDir: o.modulesDir, Nix: o.nixSettings()})
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if !r.DefaultWorks {
		return loop.ErrFailed
	}
	return nil
}

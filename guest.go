package main

import (
	"io"

	"kwatch/event"
	"kwatch/machine"
)

// machineOptions is what the flags say about the guest, for package machine.
func (o *options) machineOptions(s setupInfo, report event.Reporter, log, stderr io.Writer) machine.Options {
	return machine.Options{
		StateDir: s.stateDir, BootTimeout: o.bootTimeout, Report: report, Log: log, Stderr: stderr,
		Accel:  o.accel,
		Kernel: o.kernel, ModulesDir: o.modulesDir,
		Flake: s.flakeRoot, NixVMAttr: o.nixVMAttr, Nix: o.nixSettings(),
		Target: o.ssh, Identity: o.identity, AcceptHostKey: o.acceptHostKey,
	}
}

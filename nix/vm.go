package nix

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"kwatch/guest/vm"
)

// VMLauncher returns a launch function (vm.Process's Launch) that runs the
// run-*-vm script of a NixOS system.build.vm output vmOut. It forwards
// 127.0.0.1:port to the guest's sshd, puts the kernel console on the script's
// stdio, keeps the disk image and scratch files in stateDir, and lets a panic
// end QEMU (panic=-1 plus -no-reboot) so kwatch can tell the VM died.
func VMLauncher(vmOut, stateDir, extraKernelParams string) func(port int, accel string) (*exec.Cmd, error) {
	return func(port int, accel string) (*exec.Cmd, error) {
		scripts, _ := filepath.Glob(filepath.Join(vmOut, "bin", "run-*-vm"))
		switch {
		case len(scripts) == 0:
			return nil, fmt.Errorf("%s/bin has no run-*-vm script: build the NixOS configuration's config.system.build.vm", vmOut)
		case len(scripts) > 1:
			return nil, fmt.Errorf("%s/bin has several run-*-vm scripts (%s): kwatch needs exactly one", vmOut, strings.Join(scripts, ", "))
		}
		stateDir, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, err
		}
		// The script's QEMU defaults to kvm:tcg, which picks KVM whenever /dev/kvm opens.
		qemuOpts := "-no-reboot"
		switch accel {
		case "kvm":
		case "tcg":
			qemuOpts = "-machine accel=tcg " + qemuOpts
		default:
			return nil, fmt.Errorf("unknown QEMU accelerator %q: want kvm or tcg", accel)
		}
		gdb, err := vm.GDBArgs(vm.GDBSocket(stateDir))
		if err != nil {
			return nil, err
		}
		// The run script splits QEMU_OPTS on spaces: a state dir path with one breaks it.
		qemuOpts += " " + strings.Join(gdb, " ")
		tmp := filepath.Join(stateDir, "vm-tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("creating the VM's scratch directory: %w", err)
		}
		params := vm.KernelParams
		if extraKernelParams != "" {
			params += " " + extraKernelParams
		}
		cmd := exec.Command(scripts[0])
		cmd.Dir = stateDir
		cmd.Env = withEnv(os.Environ(),
			fmt.Sprintf("QEMU_NET_OPTS=hostfwd=tcp:127.0.0.1:%d-:22", port),
			"QEMU_KERNEL_PARAMS="+params,
			"QEMU_OPTS="+qemuOpts,
			// Without these the script makes the disk in the current directory
			// and a fresh, never deleted nix-vm.* scratch directory per run.
			"NIX_DISK_IMAGE="+filepath.Join(stateDir, "nixos.qcow2"),
			"USE_TMPDIR=1",
			"TMPDIR="+tmp,
		)
		return cmd, nil
	}
}

// withEnv returns env with the name=value pairs in set replacing any
// variables of the same names.
func withEnv(env []string, set ...string) []string {
	names := map[string]bool{}
	for _, kv := range set {
		name, _, _ := strings.Cut(kv, "=")
		names[name] = true
	}
	var out []string
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !names[name] {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

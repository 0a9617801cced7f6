package nix

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/nix/nixtest"
)

func TestVMLauncherCommand(t *testing.T) {
	out := t.TempDir()
	writeExec(t, filepath.Join(out, "bin", "run-kwatch-vm"), "#!/bin/sh\n")
	state := t.TempDir()
	t.Setenv("TMPDIR", "/elsewhere")
	for _, tc := range []struct {
		accel    string
		qemuOpts string
		err      string
	}{
		{accel: "kvm", qemuOpts: "-no-reboot"},
		{accel: "tcg", qemuOpts: "-machine accel=tcg -no-reboot"},
		{accel: "hvf", err: `unknown QEMU accelerator "hvf": want kvm or tcg`},
	} {
		t.Run(tc.accel, func(t *testing.T) {
			cmd, err := VMLauncher(out, state, "kwatch.x=1")(2222, tc.accel)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Path != filepath.Join(out, "bin", "run-kwatch-vm") || cmd.Dir != state {
				t.Errorf("runs %s in %s", cmd.Path, cmd.Dir)
			}
			for _, kv := range []string{
				"QEMU_NET_OPTS=hostfwd=tcp:127.0.0.1:2222-:22",
				"QEMU_KERNEL_PARAMS=" + vm.KernelParams + " kwatch.x=1",
				"QEMU_OPTS=" + tc.qemuOpts + " -chardev socket,path=" + vm.GDBSocket(state) + ",server=on,wait=off,id=gdb0 -gdb chardev:gdb0",
				"NIX_DISK_IMAGE=" + filepath.Join(state, "nixos.qcow2"),
				"USE_TMPDIR=1",
				"TMPDIR=" + filepath.Join(state, "vm-tmp"),
			} {
				if !slices.Contains(cmd.Env, kv) {
					t.Errorf("env lacks %s", kv)
				}
			}
			if n := countVar(cmd.Env, "TMPDIR"); n != 1 {
				t.Errorf("%d TMPDIR variables, want kwatch's alone", n)
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(state, "vm-tmp")); err != nil || !fi.IsDir() {
		t.Errorf("vm-tmp was not created: %v", err)
	}
}

func TestVMLauncherScripts(t *testing.T) {
	none := t.TempDir()
	two := t.TempDir()
	writeExec(t, filepath.Join(two, "bin", "run-a-vm"), "")
	writeExec(t, filepath.Join(two, "bin", "run-b-vm"), "")
	for dir, want := range map[string]string{none: "has no run-*-vm script", two: "has several run-*-vm scripts"} {
		if _, err := VMLauncher(dir, t.TempDir(), "")(2222, "tcg"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", dir, err, want)
		}
	}
}

// TestVMLauncherBoots builds a VM output with nix and boots it through
// vm.Process with VMLauncher, until the guest's sshd answers on the
// forwarded port.
func TestVMLauncherBoots(t *testing.T) {
	nixtest.Need(t)
	kernel, modules := nixtest.HostKernel(t)
	state := t.TempDir()
	flake := t.TempDir()
	nixtest.WriteFlake(t, flake, nixtest.Flake{Kernel: kernel, Initrd: nixtest.Initramfs(t, state, modules)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log bytes.Buffer
	paths, err := Settings{}.Build(ctx, flake+"#vm", filepath.Join(state, "vm-result"), &log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "making the VM script") {
		t.Errorf("the build log was not streamed:\n%s", log.String())
	}

	v := &vm.Process{StateDir: state, Kind: guest.Nix, Ident: paths[0], Accel: "tcg",
		Launch: VMLauncher(paths[0], state, "kwatch.test=1")}
	t.Cleanup(func() {
		if err := v.Down(); err != nil {
			t.Error(err)
		}
	})
	if _, err := v.Up(ctx, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	console := readFile(t, filepath.Join(state, "console.log"))
	if !strings.Contains(console, vm.KernelParams+" kwatch.test=1") {
		t.Errorf("QEMU_KERNEL_PARAMS did not reach the kernel command line:\n%s", console)
	}
	for _, p := range []string{"nixos.qcow2", "vm-tmp/xchg"} {
		if _, err := os.Stat(filepath.Join(state, p)); err != nil {
			t.Errorf("the script did not use the state dir: %v", err)
		}
	}
	// QEMU_OPTS gave the VM its gdbstub on the state dir's socket.
	st, err := vm.DialStub(vm.GDBSocket(state))
	if err != nil {
		t.Fatalf("the VM's gdbstub: %v", err)
	}
	if err := st.Detach(); err != nil { // the stub answers "OK"
		t.Errorf("detaching from the stub: %v", err)
	}
}

func countVar(env []string, name string) int {
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			n++
		}
	}
	return n
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	nixtest.WriteFile(t, path, content)
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

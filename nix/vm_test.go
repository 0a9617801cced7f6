package nix

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"kwatch/guest"
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
				"QEMU_KERNEL_PARAMS=console=ttyS0 loglevel=7 panic=-1 kwatch.x=1",
				"QEMU_OPTS=" + tc.qemuOpts,
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

// vmScript stands in for NixOS's run-<name>-vm: it honours the same
// environment variables the same way, then boots the host's kernel with
// kwatch's own initramfs.
const vmScript = `#!/bin/bash
set -e
NIX_DISK_IMAGE=$(readlink -f "${NIX_DISK_IMAGE:-./test.qcow2}")
if ! test -e "$NIX_DISK_IMAGE"; then
    truncate -s 64M "$NIX_DISK_IMAGE"
fi
if [ -z "$TMPDIR" ] || [ -z "$USE_TMPDIR" ]; then
    TMPDIR=$(mktemp -d nix-vm.XXXXXXXXXX --tmpdir)
fi
mkdir -p "$TMPDIR/xchg"
cd "$TMPDIR"
exec qemu-system-x86_64 -machine accel=kvm:tcg -cpu max -m 512 -nographic \
    -net nic,netdev=user.0,model=e1000 -netdev user,id=user.0,"$QEMU_NET_OPTS" \
    -drive file="$NIX_DISK_IMAGE",format=raw,if=virtio \
    -kernel @KERNEL@ -initrd @INITRD@ \
    -append "console=ttyS0 $QEMU_KERNEL_PARAMS" \
    $QEMU_OPTS "$@"
`

// TestVMLauncherBoots builds a VM output with nix and boots it through
// guest.VM with VMLauncher, until the guest's sshd answers on the
// forwarded port.
func TestVMLauncherBoots(t *testing.T) {
	needNix(t)
	kernel, modules := hostKernel(t)
	state := t.TempDir()
	_, pub, err := guest.LoadOrCreateKey(state)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := guest.EnsureHostKey(state)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(state, "initramfs.gz")
	if err := guest.WriteInitramfs(initrd, guest.InitramfsConfig{AuthorizedKey: pub, HostKey: hostKey, ModulesDir: modules}); err != nil {
		t.Fatal(err)
	}

	flake := t.TempDir()
	script := strings.NewReplacer("@KERNEL@", kernel, "@INITRD@", initrd).Replace(vmScript)
	writeFile(t, filepath.Join(flake, "run-test-vm"), script)
	writeFile(t, filepath.Join(flake, "flake.nix"), `{
  outputs = { self }: {
    packages.x86_64-linux.vm = derivation {
      name = "test-vm";
      system = "x86_64-linux";
      builder = "/bin/bash";
      outputs = [ "out" ];
      run = "`+strconv.FormatInt(time.Now().UnixNano(), 10)+`";
      PATH = "/usr/bin:/bin";
      script = ./run-test-vm;
      args = [ "-c" "echo making the VM script; mkdir -p $out/bin && install -m755 $script $out/bin/run-test-vm; echo done" ];
    };
  };
}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log bytes.Buffer
	paths, err := Build(ctx, flake+"#vm", filepath.Join(state, "vm-result"), &log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "making the VM script") {
		t.Errorf("the build log was not streamed:\n%s", log.String())
	}

	vm := &guest.VM{StateDir: state, Backend: "nix", Ident: paths[0], Accel: "tcg",
		Launch: VMLauncher(paths[0], state, "kwatch.test=1")}
	t.Cleanup(func() {
		if err := vm.Down(); err != nil {
			t.Error(err)
		}
	})
	if _, err := vm.Up(ctx, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	console := readFile(t, filepath.Join(state, "console.log"))
	if !strings.Contains(console, "console=ttyS0 loglevel=7 panic=-1 kwatch.test=1") {
		t.Errorf("QEMU_KERNEL_PARAMS did not reach the kernel command line:\n%s", console)
	}
	for _, p := range []string{"nixos.qcow2", "vm-tmp/xchg"} {
		if _, err := os.Stat(filepath.Join(state, p)); err != nil {
			t.Errorf("the script did not use the state dir: %v", err)
		}
	}
}

// hostKernel returns the installed Debian kernel image and its modules dir.
func hostKernel(t *testing.T) (image, modules string) {
	t.Helper()
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, image := range images {
		modules := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(image), "vmlinuz-"))
		if _, err := os.Stat(filepath.Join(modules, "build", "Makefile")); err == nil {
			return image, modules
		}
	}
	t.Skip("no kernel image with headers in /boot and /lib/modules")
	return "", ""
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

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path, content)
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

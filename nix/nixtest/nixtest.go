// Package nixtest holds the fixtures that the nix package's tests and
// kwatch's end-to-end tests share: a nix configuration that lets root use nix
// here, and an input-less flake whose module and VM outputs stand in for a
// kwatch project without needing nixpkgs.
package nixtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/guest/vm/vmtest"
)

// Config lets root use nix here without a daemon, a sandbox or a cache.
const Config = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group ="

// SetConfig sets NIX_CONFIG to Config unless the environment has its own;
// nix and every kwatch the tests start inherit it.
func SetConfig() {
	if os.Getenv("NIX_CONFIG") == "" {
		os.Setenv("NIX_CONFIG", Config)
	}
}

// Need skips tests that run nix in -short mode or where nix is missing.
func Need(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs nix")
	}
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("nix is not installed")
	}
}

// HostKernel returns the installed kernel image of the oldest series that
// has headers (Debian 12's 6.1: the fast path the incremental builder takes
// knows 6.1), and its /lib/modules/<version> dir; it skips the test when
// there is none.
func HostKernel(t testing.TB) (image, modules string) {
	t.Helper()
	for _, k := range vmtest.Debian() {
		if _, err := os.Stat(filepath.Join(k.Build, "Makefile")); err == nil {
			return k.Image, k.Modules
		}
	}
	t.Skip("no kernel image with headers in /boot and /lib/modules")
	return "", ""
}

// Initramfs writes kwatch's initramfs into stateDir, with the NIC driver from
// modules and the state dir's SSH keys (created when missing), so that
// kwatch runs using stateDir can log into a VM booted with it. It returns
// the initramfs's path.
func Initramfs(t testing.TB, stateDir, modules string) string {
	t.Helper()
	_, authKey, err := ssh.LoadOrCreateKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := vm.EnsureHostKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(stateDir, "test-initramfs.cpio.gz")
	err = vm.WriteInitramfs(path, vm.InitramfsConfig{AuthorizedKey: authKey, HostKey: hostKey, ModulesDir: modules})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Flake says what WriteFlake puts in a flake.
type Flake struct {
	// Modules, when set, adds packages.x86_64-linux.module: it builds the
	// module in src/ against Modules/build the way a nixpkgs module
	// derivation does, make $makeFlags, and installs it under
	// $out/lib/modules/<version>/updates. module-zst and module-gz install
	// it compressed, as hello.ko.zst and hello.ko.gz.
	Modules string
	// Kernel and Initrd, when set, add packages.x86_64-linux.vm, whose
	// bin/run-test-vm stands in for NixOS's run-<name>-vm and boots them.
	Kernel, Initrd string
}

// The builder scripts end with a builtin: when bash execs a last external
// command, nix 2.8 without a sandbox often reports the build as killed by
// signal 9. Each write gives the derivations a new run attribute, so nix
// builds them instead of reusing store paths of earlier tests, and a
// rewritten flake has a VM with a new out path.
var flakeTemplate = template.Must(template.New("flake.nix").Parse(`{
  outputs = { self }: let
    module = compress: derivation {
      name = "hello-module";
      system = "x86_64-linux";
      builder = "/bin/bash";
      outputs = [ "out" ];
      run = "{{.Run}}";
      PATH = "/usr/bin:/bin";
      src = ./src;
      makeFlags = [ "KDIR={{.Modules}}/build" ];
      args = [ "-c" ''
        set -e
        cp -r $src/. . && chmod -R u+w .
        make $makeFlags
        install -Dm444 hello.ko -t $out/lib/modules/{{.Version}}/updates
        ${compress} $out/lib/modules/{{.Version}}/updates/hello.ko
        echo installed
      '' ];
    };
  in {
{{- if .Modules}}
    packages.x86_64-linux.module = module "true";
    packages.x86_64-linux.module-zst = module "zstd -q --rm";
    packages.x86_64-linux.module-gz = module "gzip";
{{- end}}
{{- if .Kernel}}
    packages.x86_64-linux.vm = derivation {
      name = "test-vm";
      system = "x86_64-linux";
      builder = "/bin/bash";
      outputs = [ "out" ];
      run = "{{.Run}}";
      PATH = "/usr/bin:/bin";
      script = ./run-test-vm;
      args = [ "-c" "echo making the VM script; mkdir -p $out/bin && install -m755 $script $out/bin/run-test-vm; echo done" ];
    };
{{- end}}
  };
}
`))

// vmScript honours the environment variables of NixOS's run-<name>-vm the
// same way, then boots @KERNEL@ with @INITRD@.
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

// WriteFlake writes dir/flake.nix, and dir/run-test-vm when the flake has
// a VM. The module's sources are WriteModule's.
func WriteFlake(t testing.TB, dir string, f Flake) {
	t.Helper()
	var b strings.Builder
	err := flakeTemplate.Execute(&b, struct {
		Flake
		Run, Version string
	}{f, strconv.FormatInt(time.Now().UnixNano(), 10), filepath.Base(f.Modules)})
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(dir, "flake.nix"), b.String())
	if f.Kernel != "" {
		script := strings.NewReplacer("@KERNEL@", f.Kernel, "@INITRD@", f.Initrd).Replace(vmScript)
		WriteFile(t, filepath.Join(dir, "run-test-vm"), script)
	}
}

// WriteModule writes the module "hello" into dir/src: Kbuild, hello.c
// (HelloC(`"1"`)) and a Makefile that prints $(EXTRA) before building
// against $(KDIR).
func WriteModule(t testing.TB, dir string) {
	t.Helper()
	WriteFile(t, filepath.Join(dir, "src", "Kbuild"), "obj-m := hello.o\n")
	WriteFile(t, filepath.Join(dir, "src", "Makefile"), `KDIR ?= /lib/modules/$(shell uname -r)/build

default:
	@echo "extra flag: $(EXTRA)"
	$(MAKE) -C $(KDIR) M=$$PWD
`)
	WriteFile(t, filepath.Join(dir, "src", "hello.c"), HelloC(`"1"`))
}

// ModuleFlake returns a new directory holding a flake with the module
// output alone, built against the host's kernel headers, and its sources.
func ModuleFlake(t testing.TB) string {
	t.Helper()
	_, modules := HostKernel(t)
	dir := t.TempDir()
	WriteFlake(t, dir, Flake{Modules: modules})
	WriteModule(t, dir)
	return dir
}

// HelloC is a module printing "hello: version <version> loaded" whose
// /sys/module/hello/version is <version>; version is a C string expression.
func HelloC(version string) string {
	return `#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void)
{
	pr_info("hello: version " ` + version + ` " loaded\n");
	return 0;
}

static void __exit hello_exit(void)
{
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION(` + version + `);
MODULE_DESCRIPTION("kwatch nix test module");
`
}

// WriteFile writes content to path, creating its directory.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Git runs git in dir with a committer identity set.
func Git(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=kwatch test", "-c", "user.email=test@kwatch.invalid"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

package doctor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kwatch/builder"
	"kwatch/guest/vm/vmtest"
	"kwatch/kmod"
)

// capability returns k's check named name.
func capability(t *testing.T, k *Kernel, name string) Check {
	t.Helper()
	for _, c := range k.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s has no %s check", k.Release, name)
	return Check{}
}

// expect checks that capability name is OK (sentinel nil) or failed with sentinel, with a fix.
func expect(t *testing.T, k *Kernel, name string, sentinel error) {
	t.Helper()
	c := capability(t, k, name)
	switch {
	case sentinel == nil && !c.OK:
		t.Errorf("%s: %s: %s (fix: %s), want it to work", k.Release, name, c.Problem, c.Fix)
	case sentinel != nil && !errors.Is(c.Err, sentinel):
		t.Errorf("%s: %s: ok %v, %v; want %v", k.Release, name, c.OK, c.Err, sentinel)
	case sentinel != nil && c.Fix == "":
		t.Errorf("%s: %s: %v has no fix", k.Release, name, c.Err)
	}
}

// The installed Debian kernels: what the report says each can do follows
// from its real files. The NIC driver is found compressed as the kernel
// compresses its modules (6.12: .ko.xz), and builds against a tree with a
// vmlinux and CONFIG_DEBUG_INFO_BTF_MODULES (6.12's) need pahole, while
// 6.1's (no vmlinux: Kbuild skips BTF) do not.
func TestDebianKernels(t *testing.T) {
	ks := vmtest.Debian()
	if len(ks) == 0 {
		t.Skip("no /boot/vmlinuz-*: run scripts/setup.sh")
	}
	r := Run(t.Context(), Options{})
	noPahole := &host{byName: map[string]*Check{"pahole": {Name: "pahole", Err: gapf(ErrMissing, "apt-get install pahole", "pahole is not on PATH")}}}
	for _, dk := range ks {
		t.Run(dk.Name, func(t *testing.T) {
			var k *Kernel
			for _, rk := range r.Kernels {
				if rk.Release == dk.Release {
					k = rk
				}
			}
			if k == nil {
				t.Fatalf("the report has no %s", dk.Release)
			}
			config, err := builder.ReadKconfig(dk.Build)
			if err != nil {
				t.Fatal(err)
			}
			suffix := ".ko"
			for opt, s := range map[string]string{"XZ": ".ko.xz", "ZSTD": ".ko.zst", "GZIP": ".ko.gz"} {
				if config["CONFIG_MODULE_COMPRESS_"+opt] == "y" {
					suffix = s
				}
			}
			if k.NIC == nil || !strings.HasSuffix(k.NIC.File, "/e1000"+suffix) || k.NIC.Compression != strings.TrimPrefix(strings.TrimPrefix(suffix, ".ko"), ".") {
				t.Fatalf("NIC %+v, want e1000%s", k.NIC, suffix)
			}
			if data, err := kmod.Read(k.NIC.File); err != nil || !bytes.HasPrefix(data, []byte("\x7fELF")) {
				t.Errorf("the NIC driver %s does not read as a module: %v", k.NIC.File, err)
			}
			expect(t, k, "boot", nil)
			expect(t, k, "c", nil)
			expect(t, k, "rust", ErrNoRust)
			expect(t, k, "gdb", ErrNoSymbols) // Debian's headers have no vmlinux with symbols
			if config["CONFIG_KUNIT"] == "" {
				expect(t, k, "kunit", ErrNoKUnit)
			} else {
				expect(t, k, "kunit", nil)
			}
			_, err = os.Stat(filepath.Join(dk.Build, "vmlinux"))
			btf := err == nil && config["CONFIG_DEBUG_INFO_BTF_MODULES"] == "y"
			bare := newKernel(dk.Image, "", "")
			bare.probe(noPahole)
			if btf {
				expect(t, k, "btf", nil)
				if c := capability(t, k, "c"); !strings.Contains(c.Detail, "pahole") {
					t.Errorf("c: %q does not say the build runs pahole", c.Detail)
				}
				expect(t, bare, "c", ErrNoPahole)
				expect(t, bare, "btf", ErrNoPahole)
			} else {
				expect(t, k, "btf", ErrNoBTF)
				expect(t, bare, "c", nil) // no pahole needed
			}
		})
	}
	if r.Default == "" || !r.DefaultWorks {
		t.Errorf("the default kernel %q does not work here: %+v", r.Default, r.Kernels)
	}
}

// A kernel tree made up here, with parts missing one at a time: each gap
// is found, named by its sentinel, and has a fix.
func TestFakeKernel(t *testing.T) {
	type tree struct {
		config     string
		noMakefile bool
		deps       string // the modules dir's modules.dep; "-" = no modules dir
		bzImage    []byte
	}
	base := tree{
		config: "CONFIG_RUST=y\nCONFIG_RUSTC_VERSION_TEXT=\"rustc 0.0.0-kwatch-test\"\nCONFIG_KUNIT=m\nCONFIG_DEBUG_INFO_BTF_MODULES=y\nCONFIG_E1000=m\n",
		deps:   "kernel/drivers/net/e1000.ko.zst:\n",
	}
	tests := []struct {
		name   string
		change func(*tree)
		want   map[string]error // capability -> sentinel (nil: works)
		nic    string           // what k.NIC says; "-": ErrNoNIC
	}{
		{"as made", func(*tree) {}, map[string]error{"boot": ErrNoImage, "c": nil, "rust": ErrRustcMismatch, "kunit": nil, "btf": ErrNoBTF, "gdb": ErrNoSymbols}, "zst-compressed"},
		{"not a bzImage", func(tr *tree) { tr.bzImage = []byte("not a kernel") }, map[string]error{"boot": ErrNoImage}, ""},
		{"no NIC driver", func(tr *tree) { tr.deps = "kernel/fs/9p.ko:\n" }, map[string]error{"c": nil}, "-"},
		{"no modules dir, NIC built in", func(tr *tree) { tr.deps = "-"; tr.config += "CONFIG_E1000=y\n" }, map[string]error{}, "built in"},
		{"no modules dir, NIC a module", func(tr *tree) { tr.deps = "-" }, map[string]error{}, "-"},
		{"no Rust, no KUnit, no BTF", func(tr *tree) { tr.config = "CONFIG_E1000=y\n" },
			map[string]error{"rust": ErrNoRust, "kunit": ErrNoKUnit, "btf": ErrNoBTF}, ""},
		{"no build tree", func(tr *tree) { tr.noMakefile = true },
			map[string]error{"c": ErrNoBuildTree, "rust": ErrNoBuildTree, "btf": ErrNoBuildTree, "gdb": ErrNoBuildTree, "kunit": ErrNoConfig}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := base
			tt.change(&tr)
			dir := t.TempDir()
			kdir := filepath.Join(dir, "linux")
			write := func(p, s string) {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write(filepath.Join(kdir, "include/config/kernel.release"), "6.99.0-kwatch-fake\n")
			if !tr.noMakefile {
				write(filepath.Join(kdir, "Makefile"), "")
				write(filepath.Join(kdir, ".config"), tr.config)
			}
			if tr.bzImage != nil {
				write(filepath.Join(kdir, "arch/x86/boot/bzImage"), string(tr.bzImage))
			}
			mods := ""
			if tr.deps != "-" {
				mods = filepath.Join(dir, "modules")
				write(filepath.Join(mods, "modules.dep"), tr.deps)
				for _, line := range strings.Split(strings.TrimSpace(tr.deps), "\n") {
					file, _, _ := strings.Cut(line, ":")
					write(filepath.Join(mods, file), "\x28\xb5\x2f\xfd")
				}
			}
			k := treeKernel(kdir, mods)
			if k.Release != "6.99.0-kwatch-fake" {
				t.Errorf("release %q, want the tree's kernel.release", k.Release)
			}
			k.probe(&host{byName: map[string]*Check{}}) // every tool there
			for name, sentinel := range tt.want {
				expect(t, k, name, sentinel)
			}
			switch {
			case tt.nic == "-" && !errors.Is(k.nicErr, ErrNoNIC):
				t.Errorf("NIC %q (%v), want ErrNoNIC", k.NIC, k.nicErr)
			case tt.nic != "-" && !strings.Contains(k.NIC.String(), tt.nic):
				t.Errorf("NIC %q, want %q", k.NIC, tt.nic)
			}
			for _, c := range k.Checks {
				if !c.OK && c.Fix == "" {
					t.Errorf("%s: %v has no fix", c.Name, c.Err)
				}
			}
		})
	}
}

// The Rust test kernel tree (make test builds it): everything but KUnit
// and BTF works, its NIC is built in, and its vmlinux has symbols.
func TestRustKernel(t *testing.T) {
	tree := os.Getenv("KWATCH_RUST_KERNEL")
	if tree == "" {
		t.Skip("KWATCH_RUST_KERNEL is not set (make test sets it)")
	}
	r := Run(t.Context(), Options{KDir: tree})
	k := r.Kernels[len(r.Kernels)-1]
	if k.Build != tree || k.NIC == nil || !k.NIC.Builtin {
		t.Errorf("tree %q, NIC %q", k.Build, k.NIC)
	}
	for _, name := range []string{"boot", "c", "rust", "gdb"} {
		expect(t, k, name, nil)
	}
	// The test kernel has KUnit (scripts/rust-kernel.sh), for the KUnit tests.
	expect(t, k, "kunit", nil)
}

// A guest comes up under TCG within the bound, a silent one is given up at
// the bound, and neither leaves a qemu behind.
func TestGuestComesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	k := vmtest.Oldest()
	if k.Image == "" {
		t.Skip("no /boot/vmlinuz-*")
	}
	// A copy whose path names only this test's qemu.
	img := filepath.Join(t.TempDir(), "vmlinuz-doctor-test")
	data, err := os.ReadFile(k.Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := guestComesUp(t.Context(), "tcg", img, time.Minute); err != nil {
		t.Errorf("a TCG guest of %s: %v", k.Image, err)
	}
	t.Logf("the banner came after %s", time.Since(start).Round(time.Millisecond))
	noQEMU(t, img)
	start = time.Now()
	err = guestComesUp(context.Background(), "tcg", img, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "printed nothing in 50ms") {
		t.Errorf("a guest given 50ms: %v, want it given up", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("giving up took %s", took)
	}
	noQEMU(t, img)
}

func noQEMU(t *testing.T, img string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(img)) {
			t.Errorf("a qemu is left behind: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

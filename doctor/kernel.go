package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"kwatch/builder"
	"kwatch/debuginfo"
	"kwatch/guest/vm"
	"kwatch/kmod"
)

// Kernel is one kernel kwatch could use: its parts, and what it can do.
type Kernel struct {
	Release string  `json:"release"`
	Image   string  `json:"image,omitempty"`
	Build   string  `json:"build_tree,omitempty"`  // Kbuild's tree (headers), "" when there is none
	Modules string  `json:"modules_dir,omitempty"` // /lib/modules/<release>, "" when there is none
	Config  string  `json:"config,omitempty"`      // the configuration file read
	NIC     *NIC    `json:"nic,omitempty"`         // the guest's network driver; nil when it has none
	Default bool    `json:"default,omitempty"`     // the kernel `kwatch DIR` boots
	Checks  []Check `json:"capabilities"`

	config  map[string]string
	nicErr  error
	imgErr  error
	treeErr error
}

func (k *Kernel) ok(name string) bool {
	for _, c := range k.Checks {
		if c.Name == name {
			return c.OK
		}
	}
	return false
}

// newKernel is an installed or --kernel image, with its build tree and
// modules dir where kwatch looks for them by default unless kdir or
// modulesDir say otherwise.
func newKernel(image, kdir, modulesDir string) *Kernel {
	k := &Kernel{Image: image}
	k.Release, k.imgErr = vm.KernelVersion(image)
	if k.Release == "" {
		k.Release = strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	}
	if kdir == "" {
		kdir = filepath.Join("/lib/modules", k.Release, "build")
	}
	if modulesDir == "" {
		modulesDir = vm.ModulesDir(k.Release)
	}
	k.find(kdir, modulesDir)
	return k
}

// treeKernel is a kernel build tree given by --kdir alone: its image is
// the tree's bzImage, when it has one.
func treeKernel(kdir, modulesDir string) *Kernel {
	k := &Kernel{}
	if rel, err := os.ReadFile(filepath.Join(kdir, "include/config/kernel.release")); err == nil {
		k.Release = strings.TrimSpace(string(rel))
	}
	if img := filepath.Join(kdir, "arch/x86/boot/bzImage"); fileExists(img) {
		k.Image = img
		var rel string
		if rel, k.imgErr = vm.KernelVersion(img); k.Release == "" {
			k.Release = rel
		}
	} else {
		k.imgErr = gapf(ErrNoImage, "make -C "+kdir+" bzImage, or pass --kernel with its image", "%s has no arch/x86/boot/bzImage", kdir)
	}
	if k.Release == "" {
		k.Release = kdir
	}
	if modulesDir == "" && k.Release != kdir {
		modulesDir = vm.ModulesDir(k.Release)
	}
	k.find(kdir, modulesDir)
	return k
}

// find reads the build tree, the configuration and the modules dir, as
// --vm qemu and Kbuild would find them.
func (k *Kernel) find(kdir, modulesDir string) {
	if fileExists(filepath.Join(kdir, "Makefile")) {
		k.Build = kdir
		k.config, k.treeErr = builder.ReadKconfig(kdir)
		for _, name := range []string{".config", "include/config/auto.conf"} {
			if p := filepath.Join(kdir, name); k.Config == "" && fileExists(p) {
				k.Config = p
			}
		}
	} else {
		k.treeErr = gapf(ErrNoBuildTree, k.headersFix(), "%s has no Makefile", kdir)
	}
	if k.config == nil {
		boot := filepath.Join("/boot", "config-"+k.Release)
		if data, err := os.ReadFile(boot); err == nil {
			k.config, k.Config = builder.ParseKconfig(data), boot
		}
	}
	k.Modules = modulesDir
	k.NIC, k.nicErr = k.nic()
}

// headersFix is the fix for a missing build tree: Debian's headers package
// for a Debian kernel, else --kdir.
func (k *Kernel) headersFix() string {
	if strings.HasSuffix(k.Release, "-amd64") {
		return "apt-get install linux-headers-" + k.Release
	}
	return "pass --kdir with the kernel's configured build tree"
}

// NIC is where the guest's network driver comes from: a file in the
// modules dir (compressed or not: kwatch decompresses it into the
// initramfs), or the kernel itself.
type NIC struct {
	Module      string `json:"module"`
	File        string `json:"file,omitempty"`        // "" when built in
	Compression string `json:"compression,omitempty"` // xz, zst or gz; "" when not compressed
	Builtin     bool   `json:"builtin,omitempty"`
}

func (n *NIC) String() string {
	switch {
	case n == nil:
		return ""
	case n.Builtin:
		return n.Module + " built in"
	case n.Compression != "":
		return n.File + " (" + n.Compression + "-compressed: kwatch decompresses it into the initramfs)"
	}
	return n.File + " (not compressed)"
}

func (k *Kernel) nic() (*NIC, error) {
	fix := "pass --modules-dir with this kernel's /lib/modules/<release>"
	if strings.HasSuffix(k.Release, "-amd64") {
		fix = "apt-get install --reinstall linux-image-" + k.Release + ", or " + fix
	}
	if k.Modules == "" {
		if k.config["CONFIG_"+strings.ToUpper(vm.NICModule)] == "y" {
			return &NIC{Module: vm.NICModule, Builtin: true}, nil
		}
		return nil, gapf(ErrNoNIC, fix, "no modules dir /lib/modules/%s for the %s module, and the kernel does not have it built in", k.Release, vm.NICModule)
	}
	x, err := kmod.ReadIndex(k.Modules)
	if err != nil {
		return nil, gapf(ErrNoNIC, fix, "%v", err)
	}
	if x.Builtin(vm.NICModule) {
		return &NIC{Module: vm.NICModule, Builtin: true}, nil
	}
	rel := x.Path(vm.NICModule)
	if rel == "" {
		return nil, gapf(ErrNoNIC, fix, "%s has no %s module", k.Modules, vm.NICModule)
	}
	n := &NIC{Module: vm.NICModule, File: filepath.Join(k.Modules, rel)}
	if !fileExists(n.File) {
		return nil, gapf(ErrNoNIC, fix, "%s is listed in modules.dep but missing", n.File)
	}
	_, n.Compression, _ = strings.Cut(filepath.Base(n.File), ".ko.")
	return n, nil
}

// probes are the capabilities checked for each kernel, in the order shown.
var probes = []struct {
	name, enables string
	probe         func(h *host, k *Kernel) (string, error)
}{
	{"boot", "boot it under --vm qemu", probeBoot},
	{"c", "build C modules against it", probeC},
	{"rust", "build Rust modules against it", probeRust},
	{"kunit", "run KUnit suites in it", probeKUnit},
	{"btf", "BTF in the modules built against it", probeBTF},
	{"gdb", "kwatch gdb with the kernel's symbols", probeSymbols},
}

func (k *Kernel) probe(h *host) {
	for _, p := range probes {
		detail, err := p.probe(h, k)
		k.Checks = append(k.Checks, check(p.name, p.enables, detail, err))
	}
}

func probeBoot(h *host, k *Kernel) (string, error) {
	var g *Gap
	switch {
	case errors.As(k.imgErr, &g):
		return "", k.imgErr
	case errors.Is(k.imgErr, os.ErrPermission):
		return "", gapf(ErrNoImage, "sudo chmod 0644 "+k.Image+" (some distributions keep kernel images root-only)", "%v", k.imgErr)
	case k.imgErr != nil:
		return "", gapf(ErrNoImage, "pass --kernel with a bzImage/vmlinuz", "%v", k.imgErr)
	case k.nicErr != nil:
		return "", k.nicErr
	}
	if err := h.need("qemu-system-x86_64"); err != nil {
		return "", err
	}
	if err := h.need("guest initramfs"); err != nil {
		return "", err
	}
	if h.kvm {
		return "accel kvm", nil
	}
	return "accel tcg (no KVM)", nil
}

// tree is the build tree's gap, if any.
func (k *Kernel) tree() error {
	if k.treeErr == nil {
		return nil
	}
	var g *Gap
	if errors.As(k.treeErr, &g) {
		return k.treeErr
	}
	return gapf(ErrNoBuildTree, "pass --kdir with a configured kernel build tree", "%v", k.treeErr)
}

// btfRuns says whether Kbuild adds BTF to modules built against k: the
// kernel has CONFIG_DEBUG_INFO_BTF_MODULES and its tree a vmlinux (Debian's
// 6.12 headers ship a BTF-only one; 6.1's none, and Kbuild skips BTF).
func (k *Kernel) btfRuns() bool {
	return k.config["CONFIG_DEBUG_INFO_BTF_MODULES"] == "y" && fileExists(filepath.Join(k.Build, "vmlinux"))
}

func probeC(h *host, k *Kernel) (string, error) {
	if err := k.tree(); err != nil {
		return "", err
	}
	cc := "gcc"
	if k.config["CONFIG_CC_IS_CLANG"] == "y" {
		cc = "clang"
	}
	for _, tool := range []string{"make", cc} {
		if err := h.need(tool); err != nil {
			return "", err
		}
	}
	detail := "Kbuild in " + k.Build + " with " + cc
	if k.btfRuns() {
		if err := h.need("pahole"); err != nil {
			return "", gapf(ErrNoPahole, "apt-get install pahole", "Kbuild runs pahole on every module it links for this kernel (CONFIG_DEBUG_INFO_BTF_MODULES and a vmlinux in %s)", k.Build)
		}
		detail += " and pahole"
	}
	return detail, nil
}

func probeRust(h *host, k *Kernel) (string, error) {
	if err := k.tree(); err != nil {
		return "", err
	}
	if k.config["CONFIG_RUST"] != "y" {
		return "", gapf(ErrNoRust, "T=$(scripts/rust-kernel.sh) builds a Rust-enabled 6.1 tree; then kwatch --kernel $T/arch/x86/boot/bzImage --kdir $T",
			"CONFIG_RUST is not set in %s", k.Config)
	}
	want := k.config["CONFIG_RUSTC_VERSION_TEXT"]
	if want == "" {
		return "the kernel did not record its rustc: kwatch uses /usr/bin/rustc", nil
	}
	rustc, ok := builder.MatchingRustc(want)
	if !ok {
		return "", gapf(ErrRustcMismatch, "install the rustc the kernel was built with ("+want+"; Debian 12's rustc is 1.63.0: apt-get install rustc), or pass --rustc FILE",
			"the kernel was built with %s; neither /usr/bin/rustc nor the rustc on PATH is that one", want)
	}
	return want + " (" + rustc + ")", nil
}

func probeKUnit(_ *host, k *Kernel) (string, error) {
	if k.config == nil {
		return "", gapf(ErrNoConfig, k.headersFix(), "no configuration for %s (no build tree, no /boot/config-%s)", k.Release, k.Release)
	}
	switch v := k.config["CONFIG_KUNIT"]; v {
	case "y", "m":
		return "CONFIG_KUNIT=" + v, nil
	}
	return "", gapf(ErrNoKUnit, "build a kernel with CONFIG_KUNIT=m (Debian's kernels have it off): ./scripts/config -m KUNIT in its tree, then pass --kernel and --kdir",
		"CONFIG_KUNIT is not set in %s", k.Config)
}

func probeBTF(h *host, k *Kernel) (string, error) {
	if err := k.tree(); err != nil {
		return "", err
	}
	if k.config["CONFIG_DEBUG_INFO_BTF_MODULES"] != "y" {
		return "", gapf(ErrNoBTF, "build a kernel with CONFIG_DEBUG_INFO_BTF_MODULES=y (modules load fine without BTF)",
			"CONFIG_DEBUG_INFO_BTF_MODULES is not set in %s", k.Config)
	}
	if !k.btfRuns() {
		return "", gapf(ErrNoBTF, "build against a kernel tree you built, which has vmlinux (--kdir); modules load fine without BTF",
			"%s has no vmlinux, so Kbuild skips BTF for modules", k.Build)
	}
	if err := h.need("pahole"); err != nil {
		return "", gapf(ErrNoPahole, "apt-get install pahole", "BTF for modules needs pahole")
	}
	return "pahole adds BTF to each module (vmlinux in " + k.Build + ")", nil
}

func probeSymbols(h *host, k *Kernel) (string, error) {
	if err := h.need("gdb"); err != nil {
		return "", err
	}
	if err := k.tree(); err != nil {
		return "", err
	}
	vmlinux := filepath.Join(k.Build, "vmlinux")
	if !debuginfo.HasSymbols(vmlinux) {
		why := "has no vmlinux"
		if fileExists(vmlinux) {
			why = "has a vmlinux without the kernel's code and symbols (BTF only)"
		}
		return "", gapf(ErrNoSymbols, "kwatch gdb reads KDIR/vmlinux: use a kernel tree you built (scripts/rust-kernel.sh's has one) with --kdir; module symbols work without it",
			"%s %s: kernel frames show as addresses", k.Build, why)
	}
	return vmlinux, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"kwatch/builder"
	"kwatch/guest/vm"
	"kwatch/proc"
)

// host is what the kernel probes need to know of the host's tools.
type host struct {
	checks []Check
	byName map[string]*Check
	kvm    bool // a KVM guest came up: guests run under KVM, not TCG
}

func (h *host) ok(name string) bool {
	c := h.byName[name]
	return c != nil && c.OK
}

// need is a kernel probe's check that tool name is there: the tool's own
// gap, or nil (also for a tool the host was not asked about).
func (h *host) need(name string) error {
	if c := h.byName[name]; c != nil && !c.OK {
		return c.Err
	}
	return nil
}

// toolProbe finds one tool: what it found, or a *Gap.
type toolProbe struct {
	name, enables string
	probe         func(ctx context.Context, opts Options) (string, error)
}

func probeHost(ctx context.Context, opts Options) *host {
	probes := []toolProbe{
		{"qemu-system-x86_64", "--vm qemu and --vm nix (the guest)", versionOf("qemu-system-x86_64", "qemu-system-x86", "--version")},
		{"KVM", "fast guests (--accel auto uses it; without it guests run under TCG, several times slower)", probeKVM},
		{"guest initramfs", "--vm qemu (its guest is made of them)", probeInitramfs},
		{"make", "building modules (Kbuild)", versionOf("make", "make", "--version")},
		{"gcc", "building C modules for gcc-built kernels", versionOf("gcc", "gcc", "--version")},
		{"clang", "building modules for clang-built kernels (the Rust test kernel)", versionOf("clang", "clang", "--version")},
		{"gdb", "kwatch gdb", versionOf("gdb", "gdb", "--version")},
		{"clangd", "your editor reads the compile_commands.json kwatch writes", versionOf("clangd", "clangd", "--version")},
		{"nix", "--vm nix, --builder nix, kwatch init", probeNix},
		{"pahole", "BTF in modules (Kbuild needs it where the build tree has a vmlinux, as Debian's 6.12 has)", versionOf("pahole", "pahole", "--version")},
		{"rustc", "Rust modules (the rustc the kernel was built with)", probeRustc},
	}
	if opts.KVMWait == 0 {
		opts.KVMWait = 5 * time.Second
	}
	// Each probe runs a tool or two for a moment: all at once.
	h := &host{checks: make([]Check, len(probes)), byName: map[string]*Check{}}
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			detail, err := p.probe(ctx, opts)
			h.checks[i] = check(p.name, p.enables, detail, err)
		})
	}
	wg.Wait()
	for i := range h.checks {
		h.byName[h.checks[i].Name] = &h.checks[i]
	}
	h.kvm = h.ok("KVM")
	return h
}

// version matches the first version number in a tool's --version line.
var version = regexp.MustCompile(`v?[0-9]+\.[0-9]+(\.[0-9]+)?`)

// versionOf probes a tool on PATH by its version line; pkg is the Debian
// package that has it.
func versionOf(bin, pkg string, args ...string) func(context.Context, Options) (string, error) {
	return func(ctx context.Context, _ Options) (string, error) {
		path, err := exec.LookPath(bin)
		if err != nil {
			return "", gapf(ErrMissing, "apt-get install "+pkg, "%s is not on PATH", bin)
		}
		out, err := output(ctx, path, args...)
		if err != nil {
			return "", gapf(ErrMissing, "apt-get install --reinstall "+pkg, "%s %s: %v", path, strings.Join(args, " "), err)
		}
		first, _, _ := strings.Cut(out, "\n")
		return version.FindString(first), nil
	}
}

// output runs a command for at most 10 s and returns its stdout.
func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout = &stdout
	err := proc.Run(ctx, cmd)
	return strings.TrimSpace(stdout.String()), err
}

// probeKVM checks /dev/kvm, that this user may open it, and that a KVM guest
// actually comes up: on some hosts (nested virtualisation) /dev/kvm opens
// but every guest hangs.
func probeKVM(ctx context.Context, opts Options) (string, error) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", gapf(ErrNoKVM, "enable virtualisation (VT-x/AMD-V) in the firmware, or nested virtualisation for this VM, then modprobe kvm_intel (or kvm_amd); until then kwatch uses TCG",
			"/dev/kvm does not exist")
	case errors.Is(err, os.ErrPermission):
		return "", gapf(ErrKVMDenied, "sudo adduser $USER kvm, then log in again", "/dev/kvm: permission denied")
	case err != nil:
		return "", gapf(ErrKVMDenied, "check /dev/kvm (ls -l /dev/kvm)", "%v", err)
	}
	f.Close()
	img := opts.Kernel
	if img == "" {
		img = vm.NewestKernel()
	}
	if img == "" {
		return "/dev/kvm usable (no kernel image to boot a test guest)", nil
	}
	if err := guestComesUp(ctx, "kvm", img, opts.KVMWait); err != nil {
		return "", gapf(ErrKVMNoBoot, "use --accel tcg (--accel auto falls back to it after 15 s)", "%v", err)
	}
	return "/dev/kvm usable, a KVM guest comes up", nil
}

// banner is the kernel's first console line.
var banner = []byte("Linux version ")

// guestComesUp boots image under QEMU with accel for at most wait and
// reports whether the kernel printed its banner on the serial console. QEMU
// runs in its own process group, ended (with anything it started) before
// guestComesUp returns, whatever happens.
func guestComesUp(ctx context.Context, accel, image string, wait time.Duration) error {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return errors.New("qemu-system-x86_64 not found: install qemu-system-x86")
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	cmd := exec.Command(qemu, "-accel", accel, "-cpu", cpu, "-m", "256", "-smp", "1", "-kernel", image,
		"-append", "console=ttyS0 panic=-1", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-monitor", "none", "-nic", "none")
	w := &watchFor{want: banner, found: cancel}
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = proc.Run(ctx, cmd)
	switch {
	case w.seen:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the guest printed nothing in %s", wait)
	case err != nil && stderr.Len() > 0:
		line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		return fmt.Errorf("qemu: %s", line)
	}
	return fmt.Errorf("the guest exited before its kernel printed anything (%v)", err)
}

// watchFor calls found once want has been written to it.
type watchFor struct {
	want  []byte
	buf   []byte
	seen  bool
	found func()
}

func (w *watchFor) Write(p []byte) (int, error) {
	if !w.seen {
		w.buf = append(w.buf, p...)
		if bytes.Contains(w.buf, w.want) {
			w.seen = true
			w.found()
		}
		if n := len(w.buf) - len(w.want); n > 0 {
			w.buf = w.buf[n:]
		}
	}
	return len(p), nil
}

func probeInitramfs(context.Context, Options) (string, error) {
	if err := (vm.InitramfsConfig{}).CheckHost(); err != nil {
		_, pkg, _ := strings.Cut(err.Error(), ": install ")
		return "", gapf(ErrMissing, "apt-get install "+pkg, "%v", err)
	}
	return "busybox-static, dropbear, sftp-server, kmod", nil
}

// probeNix finds nix, whether it has flakes and which builders it uses.
// kwatch enables flakes on each command it runs, so a nix.conf without them
// is fine; a nix too old for flakes is not.
func probeNix(ctx context.Context, opts Options) (string, error) {
	ver, err := versionOf("nix", "nix-bin", "--version")(ctx, opts)
	if err != nil {
		return "", err
	}
	conf, err := opts.Nix.Config(ctx)
	if err != nil {
		return ver, gapf(ErrOldNix, "install Nix 2.4 or newer (apt-get install nix-bin)", "%v", err)
	}
	flakes := "kwatch turns on"
	if strings.Contains(" "+conf["experimental-features"]+" ", " flakes ") {
		flakes = "on in nix.conf"
	}
	return fmt.Sprintf("%s; flakes: %s; builders: %s", ver, flakes, builders(conf["builders"])), nil
}

// builders describes nix's builders setting: "@FILE" names a machines file.
func builders(b string) string {
	file, ok := strings.CutPrefix(b, "@")
	if !ok {
		if b == "" {
			return "none"
		}
		return b
	}
	data, err := os.ReadFile(file)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d from %s", len(strings.Split(strings.TrimSpace(string(data)), "\n")), file)
}

// probeRustc reports Debian's rustc, which builds kernel code, and the one
// on PATH when it is another (a rustup rustc cannot build kernel code).
func probeRustc(context.Context, Options) (string, error) {
	sys := "/usr/bin/rustc"
	if _, err := os.Stat(sys); err != nil {
		return "", gapf(ErrMissing, "apt-get install rustc", "%s not found", sys)
	}
	v := builder.RustcVersion(sys)
	if v == "" {
		return "", gapf(ErrMissing, "apt-get install --reinstall rustc", "%s --version failed", sys)
	}
	detail := version.FindString(v) + " (" + sys
	if p, err := exec.LookPath("rustc"); err == nil && filepath.Clean(p) != sys {
		if pv := builder.RustcVersion(p); pv != "" && pv != v {
			detail += "; not " + p + ", " + version.FindString(pv)
		}
	}
	return detail + ")", nil
}

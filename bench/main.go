// Command bench measures kwatch against the ways it replaces, in one run:
// reload latency for every builder, the scripted seed loop and the floor;
// kernel log throughput and loss; watch setup; and kwatch's own CPU and
// memory, on a guest of the oldest installed Debian kernel series. Then, one
// guest at a time, it measures the per-kernel C-module parts (perKernel) on
// the newest build of each newer series, and hello-rust on the Rust kernel.
// It prints a table and writes bench/results.md.
//
//	go run ./bench [-edits 20] [-lines 50000] [-saves 500] [-only kbuild,floor,...] [-kernel IMAGE]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"kwatch/guest/vm"
)

// nixConfig lets root use nix here without a daemon, a sandbox or a cache.
const nixConfig = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group ="

type config struct {
	rust   string // the Rust-enabled kernel tree; "" = no Rust rows
	edits  int
	lines  int
	saves  int // of the soak run
	idle   time.Duration
	kernel string   // one guest kernel image; "" = each installed series
	kwatch string   // a kwatch binary to measure; "" = build the working tree
	flags  []string // extra flags for every kwatch run
	out    string
	only   map[string]bool // empty = every part
}

func (c *config) wants(part string) bool { return len(c.only) == 0 || c.only[part] }

// args are the run's flags that say what was measured.
func (c *config) args() string {
	a := fmt.Sprintf("-edits %d -lines %d -saves %d", c.edits, c.lines, c.saves)
	if c.kernel != "" {
		a += " -kernel " + c.kernel
	}
	if len(c.only) > 0 {
		a += " -only " + strings.Join(slices.DeleteFunc(slices.Clone(parts), func(p string) bool { return !c.only[p] }), ",")
	}
	return a
}

// parts are the names -only accepts, in the order they run.
var parts = []string{"watch", "floor", "seed", "kbuild", "nix-incremental", "nix-derivation", "compiler-floor", "module-version", "flood", "soak", "rust", "kunit"}

// perKernel are the parts that also run on each newer kernel series: what
// the Kbuild fast path and the compiler floor depend on.
var perKernel = []string{"floor", "kbuild", "compiler-floor", "module-version"}

func main() {
	var c config
	var only, flags string
	flag.IntVar(&c.edits, "edits", 20, "edits per reload variant")
	flag.IntVar(&c.lines, "lines", 50000, "kernel log lines the flood module prints")
	flag.IntVar(&c.saves, "saves", 500, "saves in a row of the soak run")
	flag.DurationVar(&c.idle, "idle", 10*time.Second, "how long kwatch's idle CPU is measured")
	flag.StringVar(&c.kernel, "kernel", "", "run on this guest kernel image alone (default: the newest /boot/vmlinuz-* of each series)")
	flag.StringVar(&c.rust, "rust-kernel", "", "the Rust-enabled kernel tree scripts/rust-kernel.sh prints, for the Rust rows")
	flag.StringVar(&c.kwatch, "kwatch", "", "kwatch binary to measure (default: build the working tree)")
	flag.StringVar(&flags, "kwatch-flags", "", `extra flags for every kwatch run, e.g. "--debounce 20ms"`)
	flag.StringVar(&c.out, "out", "bench/results.md", "where the results go (markdown)")
	flag.StringVar(&only, "only", "", "comma-separated parts to run: "+strings.Join(parts, ","))
	flag.Parse()
	c.flags = strings.Fields(flags)
	if only != "" {
		c.only = map[string]bool{}
		for _, p := range strings.Split(only, ",") {
			if !slices.Contains(parts, p) {
				fmt.Fprintf(os.Stderr, "bench: unknown part %q in -only: use %s\n", p, strings.Join(parts, ","))
				os.Exit(2)
			}
			c.only[p] = true
		}
	}
	if c.kernel == "" && len(vm.NewestOfEachSeries()) == 0 {
		fmt.Fprintln(os.Stderr, "bench: no /boot/vmlinuz-*: run scripts/setup.sh or pass -kernel")
		os.Exit(2)
	}
	if os.Getenv("NIX_CONFIG") == "" {
		os.Setenv("NIX_CONFIG", nixConfig)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// bench is one run: where things are and what was measured.
type bench struct {
	cfg     config
	work    string         // temporary dir holding everything below
	bin     string         // the kwatch binary
	source  string         // git describe of the kwatch built
	kernels []*guestKernel // the Debian kernels to measure
	guest   *guestKernel   // the one whose guest the parts now running use
	used    []*guestKernel // every kernel a guest ran, in order
	res     results
}

// guestKernel is a kernel the bench boots a guest of: the label of its
// rows, and where that guest's state and the bench's files for it go.
type guestKernel struct {
	label   string // "Debian 6.12", "Rust 6.1"
	image   string // what the guest boots
	release string
	kdir    string   // the Kbuild tree modules are built against
	dir     string   // the guest's state dir and module copies are in it
	args    []string // more flags for kwatch's runs (the Rust tree's --kdir)
}

func (k *guestKernel) state() string { return filepath.Join(k.dir, "state") }

// newGuestKernel describes the kernel image, named label plus its series;
// kdir "" is Debian's headers of its release.
func newGuestKernel(work, label, image, kdir string, args ...string) (*guestKernel, error) {
	release, err := vm.KernelVersion(image)
	if err != nil {
		return nil, err
	}
	if kdir == "" {
		kdir = filepath.Join("/lib/modules", release, "build")
	}
	label += " " + vm.Series(release)
	dir := filepath.Join(work, strings.ReplaceAll(strings.ToLower(label), " ", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &guestKernel{label: label, image: image, release: release, kdir: kdir, dir: dir, args: args}, nil
}

func run(ctx context.Context, c config) error {
	work, err := os.MkdirTemp("", "kwatch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &bench{cfg: c, work: work, bin: filepath.Join(work, "kwatch")}
	images := []string{c.kernel}
	if c.kernel == "" {
		images = vm.NewestOfEachSeries()
	}
	for _, img := range images {
		k, err := newGuestKernel(work, "Debian", img, "")
		if err != nil && c.kernel != "" {
			return fmt.Errorf("-kernel: %w (pass a Debian kernel image, /boot/vmlinuz-*, or no -kernel for each installed series)", err)
		}
		if err != nil {
			return err
		}
		b.kernels = append(b.kernels, k)
	}
	b.res.started = time.Now()
	loadStart, qemuStart := loadavg(), len(otherQEMUs())

	if c.wants("watch") {
		step("watch setup on a 20k-file tree")
		if b.res.watch, err = measureWatch(work); err != nil {
			return fmt.Errorf("measuring watch setup: %w", err)
		}
	}
	// Every part on the oldest series; the per-kernel ones on the others.
	for i, k := range b.kernels {
		wants := func(p string) bool { return c.wants(p) && (i == 0 || slices.Contains(perKernel, p)) }
		if err := b.withGuest(ctx, k, wants); err != nil {
			return err
		}
	}
	if c.wants("rust") || c.wants("kunit") {
		if err := b.rust(ctx); err != nil {
			return err
		}
	}
	b.res.env = append(environment(b.used, b.kwatchName()),
		[2]string{"load average (1 min), start → end", loadStart + " → " + loadavg()},
		[2]string{"other QEMU guests running, start → end", fmt.Sprintf("%d → %d", qemuStart, len(otherQEMUs()))})
	b.res.finished = time.Now()
	b.res.stray = strayProcesses(work)

	var md strings.Builder
	b.res.write(&md, c)
	fmt.Print(md.String())
	if err := os.WriteFile(c.out, []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", c.out, err)
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", c.out)
	return nil
}

// withGuest builds kwatch, boots a guest of kernel k, runs the guest parts
// wants on it and stops the guest again, whatever happened.
func (b *bench) withGuest(ctx context.Context, k *guestKernel, wants func(string) bool) error {
	// Every part but the watch setup and those of the Rust guest.
	if !slices.ContainsFunc(parts[1:slices.Index(parts, "rust")], wants) {
		return nil
	}
	if err := b.buildKwatch(ctx); err != nil {
		return err
	}
	b.use(k)
	step("booting the guest (TCG): " + k.label)
	defer b.stopGuest()
	if out, err := exec.CommandContext(ctx, b.bin, append([]string{"vm", "up"}, b.vmArgs()...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("kwatch vm up: %v\n%s", err, out)
	}

	p, err := newProject(filepath.Join(k.dir, "project"), "kwbench", k.kdir, k.release)
	if err != nil {
		return err
	}
	// The compiler floor of the bench's module is replayed between the edits
	// of kwatch's Kbuild run, so that both see the same machine.
	var cfloor *compilerFloor
	var cfloorErr error
	if wants("compiler-floor") {
		step("compiler floor: the bench's C module (replayed between kwatch's edits)")
		cfloor, cfloorErr = b.benchModuleFloor(ctx, p)
	}
	// kwatch's idle cost is measured once, on the first guest.
	kbuild := kwatchRun{editor: p, id: "kbuild", name: "kwatch (Kbuild)", vm: b.vmArgs(), dir: p.src, idle: b.res.cost.idle.wall == 0}
	if cfloor != nil && cfloorErr == nil {
		kbuild.between = cfloor.once
	}
	type part struct {
		name string
		run  func() (*variant, error)
	}
	reloads := []part{
		{"floor", func() (*variant, error) { return b.floor(ctx, p) }},
		{"seed", func() (*variant, error) { return b.seed(ctx, p) }},
		{"kbuild", func() (*variant, error) {
			return b.kwatch(ctx, kbuild)
		}},
		{"nix-incremental", func() (*variant, error) {
			return b.kwatch(ctx, kwatchRun{editor: p, id: "nix-incremental", name: "kwatch (nix incremental)", vm: b.vmArgs(), dir: p.root,
				args: []string{"--builder", "nix", "--nix-mode", "incremental"}})
		}},
		{"nix-derivation", func() (*variant, error) {
			return b.kwatch(ctx, kwatchRun{editor: p, id: "nix-derivation", name: "kwatch (nix derivation)", vm: b.vmArgs(), dir: p.root,
				args: []string{"--builder", "nix", "--nix-mode", "derivation"}})
		}},
	}
	for _, r := range reloads {
		if !wants(r.name) {
			continue
		}
		step("reload latency: " + r.name)
		v, err := r.run()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", r.name, err)
			v.err = err
		}
		b.addReload(v)
	}
	if wants("compiler-floor") {
		if err := b.addModuleRow(ctx, "the bench's C module", b.res.find(k.label, "kwatch (Kbuild)"), cfloor, cfloorErr); err != nil {
			return err
		}
	}
	if wants("module-version") {
		step("reload latency and compiler floor: printerfact-c (MODULE_VERSION)")
		if err := b.moduleVersion(ctx); err != nil {
			return err
		}
	}
	if wants("flood") {
		step(fmt.Sprintf("kernel log flood of %d lines", b.cfg.lines))
		b.res.floods, err = b.floods(ctx)
		if err != nil {
			return err
		}
	}
	if wants("soak") {
		step(fmt.Sprintf("soak: %d saves in a row", b.cfg.saves))
		soak := b.soak(ctx)
		b.res.soak = &soak
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// buildKwatch builds the kwatch to measure, once.
func (b *bench) buildKwatch(ctx context.Context) error {
	if b.cfg.kwatch != "" {
		b.bin = b.cfg.kwatch
		return nil
	}
	if _, err := os.Stat(b.bin); err == nil {
		return nil
	}
	step("building kwatch")
	// The source is read now: it may change while the bench runs.
	out, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	b.source = strings.TrimSpace(string(out))
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "kwatch").CombinedOutput(); err != nil {
		return fmt.Errorf("building kwatch: %v\n%s", err, out)
	}
	return nil
}

// kwatchName says which kwatch was measured.
func (b *bench) kwatchName() string {
	switch {
	case b.cfg.kwatch != "":
		return b.cfg.kwatch
	case b.source != "":
		return "built from the working tree, source " + b.source
	}
	return "not run"
}

// use makes k's guest the one the parts share from now on.
func (b *bench) use(k *guestKernel) {
	b.guest = k
	b.used = append(b.used, k)
	b.res.kernels = append(b.res.kernels, k.label)
}

// vmArgs are the flags that pick the guest the parts now running share.
func (b *bench) vmArgs() []string {
	return []string{"--vm", "qemu", "--kernel", b.guest.image, "--accel", "tcg", "--state-dir", b.guest.state()}
}

// stopGuest stops the guest the parts that ran shared.
func (b *bench) stopGuest() {
	step("stopping the guest: " + b.guest.label)
	if out, err := exec.Command(b.bin, "vm", "down", "--state-dir", b.guest.state()).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: kwatch vm down: %v\n%s", err, out)
	}
}

// addReload adds a reload row, labelled with the guest's kernel.
func (b *bench) addReload(v *variant) {
	v.kernel = b.guest.label
	b.res.reload = append(b.res.reload, v)
}

func step(msg string) { fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().Format("15:04:05"), msg) }

// environment describes the machine and the versions of everything measured.
func environment(kernels []*guestKernel, bin string) [][2]string {
	cpu := "?"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "not available"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	var uts syscall.Utsname
	syscall.Uname(&uts)
	env := [][2]string{
		{"date", time.Now().Format(time.RFC3339)},
		{"cpu", fmt.Sprintf("%s, %d cores", cpu, runtime.NumCPU())},
		{"memory", first("sh", "-c", "free -m | awk '/Mem:/ {print $2 \" MB\"}'")},
		{"host kernel", utsString(uts.Release[:])},
	}
	for _, k := range kernels {
		env = append(env, [2]string{"guest kernel, " + k.label, k.release + " (" + k.image + "), QEMU TCG, 1 vCPU"})
	}
	return append(env, [][2]string{
		{"go", first("go", "version")},
		{"qemu", first("qemu-system-x86_64", "--version")},
		{"nix", first("nix", "--version")},
		{"openssh", first("ssh", "-V")},
		{"gcc", first("gcc", "--version")},
		{"kwatch", bin},
	}...)
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(data) + " ?")[:1], "")
}

// otherQEMUs lists the QEMU processes that are not the bench's: they compete
// with the guest for the CPU, so the numbers should be read with them in mind.
func otherQEMUs() []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		comm, _ := os.ReadFile(p + "/comm")
		stat, _ := os.ReadFile(p + "/stat")
		// A zombie (state Z, after the last ")") is a guest that ended, such
		// as the bench's own, not yet reaped.
		if strings.HasPrefix(string(comm), "qemu-system") && !strings.HasPrefix(string(stat[bytes.LastIndexByte(stat, ')')+1:]), " Z") {
			pids = append(pids, filepath.Base(p))
		}
	}
	return pids
}

// strayProcesses lists processes that still mention dir, such as a qemu or
// make the bench failed to stop. It only reports them.
func strayProcesses(dir string) []string {
	var stray []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil || filepath.Base(p) == fmt.Sprint(os.Getpid()) {
			continue
		}
		cl := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		cwd, _ := os.Readlink(p + "/cwd")
		if strings.Contains(cl, dir) || strings.HasPrefix(cwd, dir) {
			stray = append(stray, filepath.Base(p)+" "+cl)
		}
	}
	return stray
}

// lastLines returns the last n lines of a file, for error messages.
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return lastOf(string(data), n)
}

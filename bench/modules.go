package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"kwatch/builder"
)

// module is a copy of an example module that the bench edits: each edit
// rewrites the line holding its version number, which its init line logs.
type module struct {
	dir, file string         // the copy, and the source edited in it
	re        *regexp.Regexp // the version line
	line      string         // the version line to write, %d for the version
	initLine  string         // the end of the init line, %d for the version
	version   int
}

// copyModule copies the example at from to to; its sources hold version 1.
func copyModule(from, to, file, re, line, initLine string) (*module, error) {
	if out, err := exec.Command("cp", "-r", from+"/.", to).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copying %s: %v: %s", from, err, out)
	}
	return &module{dir: to, file: file, re: regexp.MustCompile(re), line: line, initLine: initLine, version: 1}, nil
}

func (m *module) edit() (string, time.Time, error) {
	m.version++
	name := filepath.Join(m.dir, m.file)
	src, err := os.ReadFile(name)
	if err != nil {
		return "", time.Time{}, err
	}
	if !m.re.Match(src) {
		return "", time.Time{}, fmt.Errorf("%s has no line matching %s", name, m.re)
	}
	src = m.re.ReplaceAllLiteral(src, fmt.Appendf(nil, m.line, m.version))
	saved := time.Now()
	if err := os.WriteFile(name, src, 0o644); err != nil {
		return "", saved, fmt.Errorf("saving %s: %w", name, err)
	}
	return fmt.Sprintf(m.initLine, m.version), saved, nil
}

// moduleRow compares kwatch on one module with that module's compiler floor.
type moduleRow struct {
	kernel, name   string // the guest's kernel (guestKernel.label), the module
	kwatch, floor  *variant
	full, stripped int64 // the .ko's size, and that of the copy kwatch uploads
	err            error // set when the row stopped early
}

// floorSteps are the compiler floor's steps: what each command of a rebuild
// is for. ".mod.o" also counts Linux 6.10+'s shared .module-common.o when make
// rebuilds it (it does not after an edit: it is only linked in); "BTF" is
// the module's BTF (pahole, then resolve_btfids) when the kernel has it.
var floorSteps = []string{"compile", "modpost", ".mod.o", "link", "BTF"}

// compilerFloor measures the commands an edit makes Kbuild run, run alone:
// the ones `make V=1` prints for a rebuild after an edit, replayed from the
// kernel build dir in the environment make exports. What it leaves out is
// make itself (reading the kernel's Makefiles, its compiler probes) and
// Kbuild's bookkeeping and checks, which produce nothing the module needs.
// The replays go one after each of kwatch's edits (see kwatchRun.between),
// so that both see the same machine; or one after another here, when kwatch
// is not measured.
type compilerFloor struct {
	v    *variant
	m    *module
	kdir string
	env  []string // the environment make exports
	cmds []string
}

// newCompilerFloor builds the module m once with make and finds the commands
// of a rebuild.
func newCompilerFloor(ctx context.Context, m *module, kdir, name string) (*compilerFloor, error) {
	f := &compilerFloor{v: &variant{name: name, steps: floorSteps}, m: m, kdir: kdir}
	mk, err := builder.Kbuild(m.dir, builder.KbuildOptions{KDir: kdir})
	if err != nil {
		return f, err
	}
	// The same make kwatch runs, without its goal and its -j: the commands
	// are the same, and one job prints them in order.
	base := slices.DeleteFunc(slices.Clone(mk.Args), func(a string) bool { return a == "modules" || strings.HasPrefix(a, "-j") })
	env := mk.Env
	if env == nil {
		env = os.Environ()
	}
	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "make", slices.Concat(base, args)...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, lastOf(stderr.String(), 10))
		}
		return out, nil
	}
	if _, err := run("modules"); err != nil {
		return f, err
	}
	out, err := run("-s", "--eval", "kwatch-bench-env: ; @env -0", "kwatch-bench-env")
	if err != nil {
		return f, err
	}
	f.env = strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if _, _, err := m.edit(); err != nil {
		return f, err
	}
	if out, err = run("V=1", "modules"); err != nil {
		return f, err
	}
	f.cmds = slices.DeleteFunc(verboseCommands(string(out)), func(c string) bool { return floorStep(c) == "" })
	if len(f.cmds) == 0 {
		return f, fmt.Errorf("make V=1 printed no commands:\n%s", out)
	}
	return f, nil
}

// once edits the module and replays the commands.
func (f *compilerFloor) once(ctx context.Context) error {
	if _, _, err := f.m.edit(); err != nil {
		return err
	}
	steps := make([]time.Duration, len(floorSteps))
	var total time.Duration
	for _, c := range f.cmds {
		cmd := exec.CommandContext(ctx, "sh", "-c", c)
		cmd.Dir, cmd.Env = f.kdir, f.env
		t := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("replaying %q: %v\n%s", firstLine(c), err, out)
		}
		d := time.Since(t)
		steps[slices.Index(floorSteps, floorStep(c))] += d
		total += d
	}
	f.v.add(total, steps...)
	return nil
}

// alone replays the commands for edits edits, when kwatch's run did not.
func (f *compilerFloor) alone(ctx context.Context, edits int) error {
	for range edits - len(f.v.samples) {
		if err := f.once(ctx); err != nil {
			return err
		}
	}
	return nil
}

// verboseCommands picks the commands out of `make V=1` output. Kbuild echoes
// each command indented; make's own lines ("make -f …", "make[1]: …") and the
// commands make echoes itself (a checking script) are not indented. A
// command's \n comes out of echo as a line break, which is put back.
func verboseCommands(out string) []string {
	var cmds []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, " "):
			cmds = append(cmds, strings.TrimSpace(l))
		case len(cmds) > 0 && strings.Count(cmds[len(cmds)-1], `"`)%2 == 1:
			cmds[len(cmds)-1] += `\n` + l
		}
	}
	return cmds
}

var (
	compilers = regexp.MustCompile(`^(\S+=\S*\s+)*\S*(gcc|clang|rustc)\S*\s`)
	// ld, ld.lld, ld.bfd, and a cross prefix's x86_64-linux-gnu-ld (Debian's 6.12).
	linkers = regexp.MustCompile(`^(\S+=\S*\s+)*(\S*[-/])?ld(\.lld|\.bfd)?\s`)
)

// floorStep says which of floorSteps a Kbuild command is part of, or "" for
// bookkeeping and checks.
func floorStep(cmd string) string {
	switch {
	case strings.Contains(cmd, "modpost"):
		return "modpost"
	case strings.Contains(cmd, "pahole") || strings.Contains(cmd, "resolve_btfids"):
		return "BTF"
	case linkers.MatchString(cmd):
		return "link"
	case compilers.MatchString(cmd) && (strings.Contains(cmd, ".mod.o ") || strings.Contains(cmd, ".module-common.o ")):
		return ".mod.o"
	case compilers.MatchString(cmd):
		return "compile"
	}
	return ""
}

// koSizes returns the size of the module m built, and of its copy stripped
// of debug info the way kwatch uploads it.
func (b *bench) koSizes(m *module) (full, stripped int64, err error) {
	kos, _ := filepath.Glob(filepath.Join(m.dir, "*.ko"))
	if len(kos) != 1 {
		return 0, 0, fmt.Errorf("%s holds %d .ko files, want 1", m.dir, len(kos))
	}
	dst := filepath.Join(b.guest.dir, "stripped-"+filepath.Base(kos[0]))
	if out, err := exec.Command("objcopy", "--strip-debug", kos[0], dst).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("objcopy: %v: %s", err, out)
	}
	for _, s := range []struct {
		name string
		n    *int64
	}{{kos[0], &full}, {dst, &stripped}} {
		fi, err := os.Stat(s.name)
		if err != nil {
			return 0, 0, err
		}
		*s.n = fi.Size()
	}
	return full, stripped, nil
}

func lastOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// benchModuleFloor prepares the compiler floor of the module the other
// variants edit, in a copy of its own.
func (b *bench) benchModuleFloor(ctx context.Context, p *project) (*compilerFloor, error) {
	m, err := copyModule(p.src, filepath.Join(b.guest.dir, "floor-"+p.name), p.name+".c",
		`version \d+ loaded`, "version %d loaded", p.name+": version %d loaded")
	if err != nil {
		return nil, err
	}
	return newCompilerFloor(ctx, m, b.guest.kdir, "compiler floor, the bench's C module")
}

// addModuleRow adds the per-module row of kwatch's run and compiler floor f
// (err: f could not be made), replaying the floor's edits kwatch's run did
// not.
func (b *bench) addModuleRow(ctx context.Context, name string, kwatch *variant, f *compilerFloor, err error) error {
	row := &moduleRow{kernel: b.guest.label, name: name, kwatch: kwatch}
	b.res.modules = append(b.res.modules, row)
	if f != nil {
		row.floor = f.v
	}
	if err == nil {
		err = f.alone(ctx, b.cfg.edits)
	}
	if err == nil {
		row.full, row.stripped, err = b.koSizes(f.m)
	}
	row.err = err
	return ctx.Err()
}

// example is an example module of the repository and how to edit it.
type example struct{ src, file, re, line, initLine string }

var (
	printerfactC = example{"examples/printerfact-c", "printerfact.c",
		`#define PRINTERFACT_VERSION \d+`, "#define PRINTERFACT_VERSION %d", "(version %d)"}
	helloRust = example{"examples/hello-rust", "hello_rust.rs",
		`const VERSION: u32 = \d+;`, "const VERSION: u32 = %d;", "version %d loaded"}
	unitsC = example{"examples/units-c", "main.c",
		`#define UNITS_VERSION \d+`, "#define UNITS_VERSION %d", "(version %d)"}
)

func (e example) copy(to string) (*module, error) {
	return copyModule(e.src, to, e.file, e.re, e.line, e.initLine)
}

// moduleVersion measures kwatch and the compiler floor on printerfact-c,
// whose MODULE_VERSION makes every edit recompile its .mod.o too.
func (b *bench) moduleVersion(ctx context.Context) error {
	return b.measureExample(ctx, "printerfact-c (MODULE_VERSION)", printerfactC, false)
}

// rust measures kwatch and the compiler floor on examples/hello-rust and
// on examples/units-c, whose KUnit suite runs on every load, in a guest of
// their own running the Rust-enabled kernel (it has KUnit) they are built
// against. It runs after the Debian guests are stopped.
func (b *bench) rust(ctx context.Context) error {
	type row struct {
		part, name string
		e          example
		kunit      bool
	}
	rows := slices.DeleteFunc([]row{
		{"rust", "hello-rust", helloRust, false},
		{"kunit", "units-c (a KUnit suite)", unitsC, true},
	}, func(r row) bool { return !b.cfg.wants(r.part) })
	if len(rows) == 0 {
		return nil
	}
	tree := b.cfg.rust
	if tree == "" {
		for _, r := range rows {
			b.res.modules = append(b.res.modules, &moduleRow{kernel: "Rust", name: r.name,
				err: fmt.Errorf("no Rust kernel: pass -rust-kernel $(scripts/rust-kernel.sh) (make bench does)")})
		}
		return nil
	}
	if err := b.buildKwatch(ctx); err != nil {
		return err
	}
	k, err := newGuestKernel(b.work, "Rust", filepath.Join(tree, "arch/x86/boot/bzImage"), tree, "--kdir", tree)
	if err != nil {
		return err
	}
	b.use(k)
	defer b.stopGuest() // kwatch's run boots it
	for _, r := range rows {
		step("reload latency and compiler floor: " + r.name + " on the Rust kernel (TCG)")
		if err := b.measureExample(ctx, r.name, r.e, r.kunit); err != nil {
			return err
		}
	}
	return nil
}

// measureExample measures kwatch on a copy of e on the guest the parts now
// running share, and e's compiler floor on another copy, replayed between
// kwatch's edits. kunit: e has KUnit suites, and a sample ends at their
// summary.
func (b *bench) measureExample(ctx context.Context, name string, e example, kunit bool) error {
	k := b.guest
	base := filepath.Join(k.dir, filepath.Base(e.src))
	var f *compilerFloor
	fm, ferr := e.copy(base + "-floor")
	if ferr == nil {
		f, ferr = newCompilerFloor(ctx, fm, k.kdir, "compiler floor, "+name)
	}
	var kv *variant
	m, err := e.copy(base)
	if err == nil {
		run := kwatchRun{editor: m, id: filepath.Base(e.src), name: filepath.Base(e.src) + ": kwatch (Kbuild)", vm: b.vmArgs(), dir: m.dir, args: k.args, kunit: kunit}
		if ferr == nil {
			run.between = f.once
		}
		kv, err = b.kwatch(ctx, run)
		kv.err = err
		b.addReload(kv)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return b.addModuleRow(ctx, name, kv, f, ferr)
}

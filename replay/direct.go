package replay

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// A Direct rebuild runs the commands Kbuild recorded for what changed, and
// what Kbuild's rules run around them (fixdep, check-local-export, objtool's
// dependency line, genksyms, the BTF step), as Linux 6.1's Makefile.build,
// Makefile.modpost and Makefile.modfinal would, without make: each
// target's recipe lines run with sh -c in the kernel build dir with make's
// environment, and only when make would run them, because the target is
// missing or older than one of its prerequisites. Graph.Direct builds one
// only when it can show that the rules it mirrors are this kernel's.
type Direct struct {
	g          *Graph
	compiles   []*Object // C and Rust objects
	links      []*Object // composite objects (foo-y := a.o b.o)
	order      *Object   // modules.order
	modpost    *Object   // Module.symvers
	modules    []module
	objtool    string // $(objtool)
	modversion bool   // CONFIG_MODVERSIONS: genksyms after each C object that exports symbols
	btf        string // CONFIG_DEBUG_INFO_BTF_MODULES: the BTF step's command, with %s for the .ko
	cpp        string
	srctree    string

	mu     sync.Mutex
	checks []*checkRun  // the checks running alongside the build
	late   []lateRecord // lines that only write records, for Finish
}

// lateRecord is a line that only writes o's record (.NAME.cmd), run by
// Finish (see writeLate).
type lateRecord struct {
	o    *Object
	line string
}

type module struct {
	modO, ko *Object
	lds      string // the linker script the .ko link names
}

// Direct returns the direct rebuild of the module, or an error saying why
// it cannot show that it would do what make does (the caller then runs the
// per-module steps instead).
func (g *Graph) Direct() (*Direct, error) {
	srctree := lookup(g.Env, "srctree")
	if srctree == "" {
		return nil, fmt.Errorf("make's environment names no srctree")
	}
	if err := g.mirrorsKbuild(); err != nil {
		return nil, err
	}
	autoconf, err := os.ReadFile(filepath.Join(g.Objtree, "include/config/auto.conf"))
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's configuration: %w", err)
	}
	config := func(name string) bool { return bytes.Contains(autoconf, []byte("\n"+name+"=y\n")) }
	for _, name := range []string{"CONFIG_TRIM_UNUSED_KSYMS", "CONFIG_FTRACE_MCOUNT_USE_RECORDMCOUNT"} {
		if config(name) {
			return nil, fmt.Errorf("the kernel has %s, whose steps are not mirrored", name)
		}
	}
	// The C rule's optional steps that make's command line turns on (C=, W=, ...).
	for _, v := range []string{"KBUILD_CHECKSRC", "KBUILD_EXTRA_WARN", "KBUILD_SYMTYPES", "KBUILD_PRESERVE"} {
		if val := lookup(g.Env, v); val != "" && val != "0" {
			return nil, fmt.Errorf("make runs with %s=%s, whose steps are not mirrored", v, val)
		}
	}
	d := &Direct{g: g, srctree: srctree, modversion: config("CONFIG_MODVERSIONS"),
		objtool: lookup(g.Env, "objtree") + "/tools/objtool/objtool", cpp: lookup(g.Env, "CPP")}
	if lookup(g.Env, "objtree") == "" || d.cpp == "" {
		return nil, fmt.Errorf("make's environment lacks objtree or CPP")
	}
	if config("CONFIG_DEBUG_INFO_BTF_MODULES") {
		if d.btf, err = btfCommand(g.Env); err != nil {
			return nil, err
		}
	}
	if err := d.classify(); err != nil {
		return nil, err
	}
	return d, nil
}

// classify sorts the records by the Kbuild rule that wrote them.
func (d *Direct) classify() error {
	g := d.g
	mods := map[string]*module{}
	modOf := func(target, suffix string) *module {
		name := strings.TrimSuffix(target, suffix)
		if mods[name] == nil {
			mods[name] = &module{}
		}
		return mods[name]
	}
	for _, o := range g.Objects {
		if filepath.Dir(o.Target) != g.Dir {
			return fmt.Errorf("%s is in a subdirectory of the module", g.rel(o.Target))
		}
		if strings.Contains(o.key, "'") {
			return fmt.Errorf("%s has a quote in its name, which the direct path's shell lines do not allow", g.rel(o.Target))
		}
		if _, err := unescape(o.raw); err != nil {
			return fmt.Errorf("the record of %s: %w", g.rel(o.Target), err)
		}
		name := filepath.Base(o.Target)
		switch {
		case o.Target == filepath.Join(g.Dir, "modules.order"):
			d.order = o
		case o.Target == filepath.Join(g.Dir, "Module.symvers"):
			d.modpost = o
		case strings.HasSuffix(name, ".mod"):
			if _, err := os.Stat(o.Target); err != nil {
				return fmt.Errorf("%s is missing", g.rel(o.Target))
			}
		case strings.HasSuffix(name, ".mod.o"):
			modOf(o.Target, ".mod.o").modO = o
		case strings.HasSuffix(name, ".ko"):
			m := modOf(o.Target, ".ko")
			m.ko = o
			if m.lds = linkerScript(o.Cmd); m.lds == "" {
				return fmt.Errorf("the link of %s names no linker script", g.rel(o.Target))
			}
		case strings.HasSuffix(name, ".o") && (strings.HasSuffix(o.Source, ".c") || strings.HasSuffix(o.Source, ".rs")):
			if (o.objtool != "") != strings.Contains(o.Cmd, " ; "+d.objtool+" ") || (o.objtool != "" && o.objtool != d.objtool) {
				return fmt.Errorf("the record of %s runs objtool otherwise than Kbuild's rule", g.rel(o.Target))
			}
			if strings.HasSuffix(o.Source, ".c") && d.modversion && d.cflags(o) == "" {
				return fmt.Errorf("the record of %s does not show the compiler flags genksyms needs", g.rel(o.Target))
			}
			d.compiles = append(d.compiles, o)
		case strings.HasSuffix(name, ".o") && o.Source == "" && strings.Contains(o.Cmd, " @"+strings.TrimSuffix(o.key, ".o")+".mod"):
			if (o.objtool != "") != strings.Contains(o.Cmd, " ; "+d.objtool+" ") {
				return fmt.Errorf("the record of %s runs objtool otherwise than Kbuild's rule", g.rel(o.Target))
			}
			d.links = append(d.links, o)
		default:
			return fmt.Errorf("no direct rule for %s", g.rel(o.Target))
		}
	}
	if d.order == nil || d.modpost == nil {
		return fmt.Errorf("no record of modules.order or Module.symvers")
	}
	for _, ko := range g.Modules {
		m := mods[strings.TrimSuffix(ko, ".ko")]
		if m == nil || m.modO == nil || m.ko == nil {
			return fmt.Errorf("no record of how %s was linked", g.rel(ko))
		}
		d.modules = append(d.modules, *m)
	}
	if len(d.modules) != len(mods) {
		return fmt.Errorf("records of modules modules.order does not name")
	}
	return nil
}

// linkerScript returns the file a link command's -T names.
func linkerScript(cmd string) string {
	f := strings.Fields(cmd)
	for i, w := range f {
		if w == "-T" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// cflags returns the $(c_flags) in a C object's record of
// `$(CC) $(c_flags) -c -o $@ $< ...`, or "" if it does not read so.
func (d *Direct) cflags(o *Object) string {
	cmd, _ := unescape(o.raw)
	cc := lookup(d.g.Env, "CC")
	i := strings.LastIndex(cmd, " -c -o "+o.key+" "+o.rawSource)
	if i <= len(cc) || cc == "" || !strings.HasPrefix(cmd, cc+" ") {
		return ""
	}
	return cmd[len(cc)+1 : i]
}

// btfCommand is Makefile.modfinal's cmd_btf_ko with make's values.
func btfCommand(env []string) (string, error) {
	vals := map[string]string{}
	for _, v := range []string{"OBJCOPY", "PAHOLE", "PAHOLE_FLAGS", "RESOLVE_BTFIDS"} {
		val, ok := lookupOK(env, v)
		if !ok {
			return "", fmt.Errorf("make's environment lacks %s, which the BTF step needs", v)
		}
		vals[v] = val
	}
	return `if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %%s due to unavailability of vmlinux\n" %[1]s 1>&2; else LLVM_OBJCOPY="` +
		vals["OBJCOPY"] + `" ` + vals["PAHOLE"] + " -J " + vals["PAHOLE_FLAGS"] + " --btf_base vmlinux %[1]s; " +
		vals["RESOLVE_BTFIDS"] + " -b vmlinux %[1]s; fi;", nil
}

// unescape undoes Kbuild's make-cmd, which recorded the command with "$"
// doubled and "#" written $(pound): it returns the command make runs.
func unescape(raw string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] != '$' {
			b.WriteByte(raw[i])
			continue
		}
		switch {
		case strings.HasPrefix(raw[i:], "$$"):
			b.WriteByte('$')
			i++
		case strings.HasPrefix(raw[i:], "$(pound)"):
			b.WriteByte('#')
			i += len("$(pound)") - 1
		default:
			return "", fmt.Errorf("the recorded command has a make reference at %q", raw[i:min(len(raw), i+20)])
		}
	}
	return b.String(), nil
}

// escsq is Kbuild's escsq: the text for inside a single-quoted shell word.
func escsq(s string) string { return strings.ReplaceAll(s, "'", `'\''`) }

// dotTarget is Kbuild's $(dot-target) of a target as a record names it.
func dotTarget(key string) string {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "./." + key
	}
	return key[:i+1] + "." + key[i+1:]
}

// depfile is Kbuild's $(depfile).
func depfile(key string) string { return strings.ReplaceAll(dotTarget(key)+".d", ",", "_") }

// recipe is one target's recipe as make would run it.
type recipe struct {
	o     *Object
	echo  string   // Kbuild's short line for it ("CC [M]  /abs/x.o")
	lines []string // each runs in its own sh -c after "set -e; ", as Kbuild's $(cmd) does
	// check is a line that only reads what lines made and writes nothing:
	// it runs alongside the rest of the build, which fails if it fails.
	check string
	// then runs after lines, for the rule's steps that depend on what
	// lines made; it returns the lines they need run, and may leave lines
	// that only write records for Finish (see writeLate).
	then func() ([]string, error)
}

// writeLate leaves line, which only writes o's record (.NAME.cmd), for
// Finish: it runs after the module was handed on, unless modpost needs the
// record first (see compile and srcversion). fixdep is most of such lines: it
// scans every file the compiler's dependency list names.
func (d *Direct) writeLate(o *Object, line string) {
	d.mu.Lock()
	d.late = append(d.late, lateRecord{o: o, line: line})
	d.mu.Unlock()
}

// command is o's recorded command, as Kbuild's $(cmd) runs it.
func command(o *Object) string {
	cmd, _ := unescape(o.raw)
	return cmd
}

// fixdep is cmd_and_fixdep's second half: the target's record from the
// compiler's dependency file.
func fixdep(o *Object) string {
	dep := depfile(o.key)
	return "scripts/basic/fixdep " + dep + " " + o.key + " '" + escsq(o.raw) + "' > " + dotTarget(o.key) + ".cmd; rm -f " + dep
}

// andSavecmd is Kbuild's cmd_and_savecmd: the command, then its record.
func andSavecmd(o *Object) string {
	return command(o) + "; printf '%s\\n' 'cmd_" + o.key + " := " + escsq(o.raw) + "' > " + dotTarget(o.key) + ".cmd"
}

// objtoolDep is Kbuild's cmd_gen_objtooldep, "" where objtool does not
// run: it adds objtool to the prerequisites in the target's record.
func (d *Direct) objtoolDep(o *Object) string {
	if o.objtool == "" {
		return ""
	}
	return "{ echo ; echo '" + escsq(o.key) + ": $(wildcard " + escsq(d.objtool) + ")' ; } >> " + dotTarget(o.key) + ".cmd"
}

// compile is the recipe of a C object (rule_cc_o_c) or a Rust one
// (if_changed_dep,rustc_o_rs).
func (d *Direct) compile(o *Object) recipe {
	if strings.HasSuffix(o.Source, ".rs") {
		// fixdep scans every file rustc's dep-info names for CONFIG_
		// symbols, the kernel crate's tens of MB of .rmeta among them:
		// longer than rustc itself, and nothing in the build reads its
		// output, so it is left for Finish.
		return d.compileThenRecord(o, "RUSTC [M] ")
	}
	return recipe{o: o, echo: "CC [M]  " + o.key, lines: []string{command(o)},
		check: d.srctree + "/scripts/check-local-export " + o.key,
		then: func() ([]string, error) {
			record := fixdep(o)
			if dep := d.objtoolDep(o); dep != "" {
				record += "; " + dep
			}
			// modpost reads the record for the CRCs of the exported
			// symbols, which gen_symversions appends: without them, now
			// and in the old record, the record can wait (until modpost
			// needs it for a srcversion: see run).
			exports := d.modversion && exportsSymbols(o.Target)
			oldCRCs := d.modversion && hasSymvers(o.file)
			switch {
			case !exports && !oldCRCs:
				d.writeLate(o, record)
				return nil, nil
			case !exports: // the old CRCs must go before modpost reads the record
				return []string{record}, nil
			}
			symref := strings.TrimSuffix(o.key, ".o") + ".symref"
			if _, err := os.Stat(d.g.abs(symref)); err != nil {
				symref = "/dev/null"
			}
			return []string{record, d.cpp + " -D__GENKSYMS__ " + d.cflags(o) + " " + o.rawSource +
				" | scripts/genksyms/genksyms -r " + symref + " >> " + dotTarget(o.key) + ".cmd"}, nil
		}}
}

// compileThenRecord is the recipe of an object without symbol CRCs: the
// compiler now, fixdep's record left for later (see writeLate).
func (d *Direct) compileThenRecord(o *Object, echo string) recipe {
	return recipe{o: o, echo: echo + o.key, lines: []string{command(o)},
		then: func() ([]string, error) { d.writeLate(o, fixdep(o)); return nil, nil }}
}

// hasSymvers reports whether the record at path holds symbol CRCs
// (gen_symversions' "#SYMVER" lines), which modpost reads.
func hasSymvers(path string) bool {
	b, _ := os.ReadFile(path)
	return bytes.Contains(b, []byte("\n#SYMVER "))
}

// exportsSymbols answers gen_symversions' `$(NM) $@ 2>/dev/null | grep -q
// __ksymtab` without running nm: whether a symbol nm lists (all but
// section and file symbols) has __ksymtab in its name.
func exportsSymbols(obj string) bool {
	f, err := elf.Open(obj)
	if err != nil {
		return false
	}
	defer f.Close()
	syms, _ := f.Symbols()
	for _, s := range syms {
		typ := elf.ST_TYPE(s.Info)
		if typ != elf.STT_SECTION && typ != elf.STT_FILE && strings.Contains(s.Name, "__ksymtab") {
			return true
		}
	}
	return false
}

// srcversion reports whether modpost computes a srcversion (sumversion.c)
// for a module here: with CONFIG_MODULE_SRCVERSION_ALL (modpost -a), or for
// a module with MODULE_VERSION, which its last .mod.c shows or an object
// compiled now declares.
func (d *Direct) srcversion(compiled []recipe) bool {
	if slices.Contains(strings.Fields(command(d.modpost)), "-a") {
		return true
	}
	for _, m := range d.modules {
		if b, _ := os.ReadFile(m.modO.Source); bytes.Contains(b, []byte("MODULE_INFO(srcversion,")) {
			return true
		}
	}
	for _, r := range compiled {
		if declaresVersion(r.o.Target) {
			return true
		}
	}
	return false
}

// sameLocalDeps reports whether each object compiled now whose record is
// still to be written depends on the same files in its own directory, in
// the same order, as its record says (the files modpost hashes for a
// srcversion): then that record may wait. The new list is the first rule of
// the compiler's dependency file, which fixdep has not read yet; one that
// cannot be read plainly, or a path not in its plain form (sumversion.c
// matches the text), means no.
func (d *Direct) sameLocalDeps(compiled []recipe) bool {
	d.mu.Lock()
	pending := map[*Object]bool{}
	for _, l := range d.late {
		pending[l.o] = true
	}
	d.mu.Unlock()
	for _, r := range compiled {
		o := r.o
		if !pending[o] {
			continue // its record is this build's already
		}
		b, err := os.ReadFile(d.g.abs(depfile(o.key)))
		if err != nil {
			return false
		}
		rule, _, _ := strings.Cut(strings.ReplaceAll(string(b), "\\\n", " "), "\n")
		_, list, ok := strings.Cut(rule, ": ")
		if !ok || strings.Contains(list, "\\") {
			return false
		}
		if !filepath.IsAbs(o.key) {
			return false // an object in the kernel tree: relative paths may be local
		}
		var now []string
		for _, f := range strings.Fields(list) {
			switch {
			case !filepath.IsAbs(f): // in the kernel tree
			case filepath.Clean(f) != f:
				return false
			default:
				now = append(now, f)
			}
		}
		dir := filepath.Dir(o.Target)
		local := func(paths []string) []string {
			return slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return filepath.Dir(p) != dir })
		}
		if !slices.Equal(local(now), local(append([]string{o.Source}, o.Deps...))) {
			return false
		}
	}
	return true
}

// declaresVersion reports whether the object's .modinfo has a version
// (MODULE_VERSION).
func declaresVersion(obj string) bool {
	f, err := elf.Open(obj)
	if err != nil {
		return true // unknown: assume so, which only costs time
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return false
	}
	b, err := sec.Data()
	return err != nil || bytes.HasPrefix(b, []byte("version=")) || bytes.Contains(b, []byte("\x00version="))
}

// Run rebuilds what the change requires, in the order the top-level make's
// steps would, and stops at the first recipe that fails. run runs one
// command (the caller stops it when ctx ends); jobs is make's -j. A Direct
// runs once.
func (d *Direct) Run(ctx context.Context, out io.Writer, run func(*exec.Cmd) error, jobs int) error {
	err := d.run(ctx, out, run, jobs)
	// The checks that ran alongside: one that failed fails the build and,
	// as make would, removes the target it checked.
	d.mu.Lock()
	checks := d.checks
	d.mu.Unlock()
	for _, c := range checks {
		<-c.done
		out.Write(c.out.Bytes())
		if c.err != nil && err == nil {
			if c.target != "" {
				os.Remove(c.target)
			}
			err = c.err
		}
	}
	return err
}

// Finish writes the records Run left for later (see writeLate), so that
// Kbuild's state is what make leaves. Call it once Run succeeded, also when
// the build is over: a target whose record failed is removed, so that the
// next build remakes it.
func (d *Direct) Finish(out io.Writer, run func(*exec.Cmd) error) error {
	d.mu.Lock()
	late := d.late
	d.late = nil
	d.mu.Unlock()
	var errs []error
	for _, r := range late {
		if err := run(d.shell(r.line, out)); err != nil {
			os.Remove(r.o.Target)
			errs = append(errs, fmt.Errorf("writing the record of %s: %w", r.o.key, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Direct) run(ctx context.Context, out io.Writer, run func(*exec.Cmd) error, jobs int) error {
	g := d.g
	// Makefile.build: the objects, composite objects, modules.order.
	var todo []recipe
	for _, o := range d.compiles {
		if d.outdated(o, append([]string{o.Source}, o.Deps...)) {
			todo = append(todo, d.compile(o))
		}
	}
	if err := d.parallel(ctx, todo, out, run, jobs); err != nil {
		return err
	}
	for _, o := range d.links {
		mod := strings.TrimSuffix(o.Target, ".o") + ".mod"
		parts, err := os.ReadFile(mod)
		if err != nil {
			return err
		}
		prereqs := []string{mod}
		for _, p := range strings.Fields(string(parts)) {
			prereqs = append(prereqs, g.abs(p))
		}
		if d.outdated(o, prereqs) {
			r := recipe{o: o, echo: "LD [M]  " + o.key, lines: []string{andSavecmd(o)},
				then: func() ([]string, error) {
					// modpost reads the records of the objects linked, not this one.
					if dep := d.objtoolDep(o); dep != "" {
						d.writeLate(o, dep)
					}
					return nil, nil
				}}
			if err := d.do(ctx, r, out, run); err != nil {
				return err
			}
		}
	}
	var objs []string
	for _, m := range d.modules {
		objs = append(objs, strings.TrimSuffix(m.ko.Target, ".ko")+".o")
	}
	if d.outdated(d.order, objs) {
		if err := d.do(ctx, recipe{o: d.order, lines: []string{andSavecmd(d.order)}}, out, run); err != nil {
			return err
		}
	}
	// The top Makefile's modules_check only reads modules.order, which the
	// recorded command wrote as the last full make did: it runs alongside.
	d.background(g.modulesCheck(), "", run)
	// Makefile.modpost. For a module's srcversion modpost hashes the local
	// files the records of its objects name: they must name this build's.
	if d.srcversion(todo) && !d.sameLocalDeps(todo) {
		if err := d.Finish(out, run); err != nil {
			return err
		}
	}
	prereqs := []string{d.order.Target, filepath.Join(g.Objtree, "scripts/mod/modpost")}
	if symvers := filepath.Join(g.Objtree, "Module.symvers"); !modTime(symvers).IsZero() {
		prereqs = append(prereqs, symvers) // $(module.symvers-if-present)
	}
	if d.outdated(d.modpost, prereqs) {
		if err := d.do(ctx, recipe{o: d.modpost, echo: "MODPOST " + d.modpost.key, lines: []string{andSavecmd(d.modpost)}}, out, run); err != nil {
			return err
		}
	}
	// Makefile.modfinal.
	for _, m := range d.modules {
		if d.outdated(m.modO, append([]string{m.modO.Source}, m.modO.Deps...)) {
			if err := d.do(ctx, d.compileThenRecord(m.modO, "CC [M]  "), out, run); err != nil {
				return err
			}
		}
		if !d.outdated(m.ko, []string{strings.TrimSuffix(m.ko.Target, ".ko") + ".o", m.modO.Target, g.abs(m.lds)}) {
			continue
		}
		r := recipe{o: m.ko, echo: "LD [M]  " + m.ko.key, lines: []string{andSavecmd(m.ko)}}
		if d.btf != "" {
			r.then = func() ([]string, error) {
				if modTime(filepath.Join(g.Objtree, "vmlinux")).IsZero() {
					// cmd_btf_ko's own words when there is no vmlinux.
					fmt.Fprintf(out, "Skipping BTF generation for %s due to unavailability of vmlinux\n", m.ko.key)
					return nil, nil
				}
				return []string{fmt.Sprintf(d.btf, m.ko.key)}, nil
			}
		}
		if err := d.do(ctx, r, out, run); err != nil {
			return err
		}
	}
	return nil
}

// outdated reports whether make would remake o: it is missing, or a
// prerequisite is newer or, unless named through $(wildcard), missing.
func (d *Direct) outdated(o *Object, prereqs []string) bool {
	t, err := os.Stat(o.Target)
	if err != nil {
		return true
	}
	for _, p := range prereqs {
		fi, err := os.Stat(p)
		if err != nil {
			if !o.wild[p] {
				return true
			}
			continue
		}
		if fi.ModTime().After(t.ModTime()) {
			return true
		}
	}
	return false
}

// parallel runs independent recipes, jobs at a time, each one's output
// written whole when it ends. Like make, it starts none after a failure,
// and returns the first once all that started ended.
func (d *Direct) parallel(ctx context.Context, todo []recipe, out io.Writer, run func(*exec.Cmd) error, jobs int) error {
	if len(todo) == 1 {
		return d.do(ctx, todo[0], out, run)
	}
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, max(jobs, 1))
	var wg sync.WaitGroup
	for _, r := range todo {
		sem <- struct{}{}
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var buf bytes.Buffer
			err := d.do(ctx, r, &buf, run)
			mu.Lock()
			defer mu.Unlock()
			out.Write(buf.Bytes())
			if first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	return first
}

// do runs one recipe; when a line fails it removes the target if the
// recipe changed it, as make's .DELETE_ON_ERROR does, so that the next
// build remakes it.
func (d *Direct) do(ctx context.Context, r recipe, out io.Writer, run func(*exec.Cmd) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.echo != "" {
		fmt.Fprintf(out, "  %s\n", r.echo)
	}
	before := modTime(r.o.Target)
	failed := func(err error) error {
		if after := modTime(r.o.Target); !after.IsZero() && !after.Equal(before) {
			os.Remove(r.o.Target)
		}
		return err
	}
	for _, line := range r.lines {
		if err := run(d.shell(line, out)); err != nil {
			return failed(err)
		}
	}
	if r.check != "" {
		d.background(d.shell(r.check, nil), r.o.Target, run)
	}
	if r.then == nil {
		return nil
	}
	more, err := r.then()
	if err != nil {
		return failed(err)
	}
	for _, line := range more {
		if err := run(d.shell(line, out)); err != nil {
			return failed(err)
		}
	}
	return nil
}

// shell is a recipe line as make runs it, with output to out (nil: set later).
func (d *Direct) shell(line string, out io.Writer) *exec.Cmd {
	c := exec.Command("sh", "-c", "set -e; "+line)
	c.Dir, c.Env = d.g.Objtree, d.g.Env
	c.Stdout, c.Stderr = out, out
	return c
}

// A checkRun is a command that runs alongside the build (see recipe.check).
type checkRun struct {
	target string // removed if the check fails, as make would
	out    bytes.Buffer
	err    error
	done   chan struct{}
}

// background starts c alongside the build; Run waits for it.
func (d *Direct) background(c *exec.Cmd, target string, run func(*exec.Cmd) error) {
	cr := &checkRun{target: target, done: make(chan struct{})}
	c.Stdout, c.Stderr = &cr.out, &cr.out
	d.mu.Lock()
	d.checks = append(d.checks, cr)
	d.mu.Unlock()
	go func() {
		defer close(cr.done)
		cr.err = run(c)
	}()
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

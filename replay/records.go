// Package replay rebuilds an external kernel module without Kbuild's
// top-level make, which spends most of a rebuild re-reading the kernel's
// Makefiles and re-running its compiler probes. It learns each build from
// make itself (package makelog: every line make ran, with its target, dir
// and environment) and reads what Kbuild recorded (the .*.cmd files,
// modules.order). On a save it first shows that the change is one those
// records cover (a recorded source or header changed; no Kbuild file, no
// kernel tree file changed, no source came or went). Then it runs again
// what make ran for each target that is out of date, and for what is
// downstream of it, in make's order, dir and environment (Replay); or, when
// a record no longer matches what make ran, the sub-makes the top-level
// make ran (Steps). Either way the result and the records left behind are
// the ones make leaves.
package replay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kwatch/buildfiles"
)

// Object is what Kbuild recorded about one target (.o, .ko, .mod ...).
type Object struct {
	Target string   // absolute path
	Cmd    string   // the command that built it, as recorded (make-escaped)
	Source string   // absolute path of the source compiled into it; "" for links
	Deps   []string // absolute paths of every file it depends on (headers, kernel config)

	dir       string          // the directory its relative paths start from
	file      string          // the .cmd file
	key       string          // the target as the record names it (make's $@)
	raw       string          // the (saved)cmd_ line's value exactly as recorded
	rawSource string          // the source as the record names it (make's $<)
	wild      map[string]bool // the Deps named through $(wildcard): a missing one is no prerequisite
	objtool   string          // the objtool a trailing `$@: $(wildcard ...)` line names, if any
}

// Graph is a module build as Kbuild recorded it, plus the state of every file
// the records name, so that a later Check sees what changed since.
type Graph struct {
	Dir     string             // the module directory (M=)
	Objects map[string]*Object // by target
	Modules []string           // the .ko files modules.order names
	rec     *Recording

	stamps  map[string]stamp // every input file under Dir, every recorded source and dependency
	tree    map[string]stamp // the kernel tree's configuration and what make's lines read from it
	records map[string]stamp // the .NAME.cmd files under Dir
	inputs  Stamps           // InputStamps as Read saw them
}

// stamp is what tells a file's content changed without reading it; the zero
// stamp means the file did not exist.
type stamp struct {
	mtime time.Time
	size  int64
}

// Stamps tells whether files changed: two that differ name a file that
// changed between them.
type Stamps map[string]stamp

// InputStamps stamps what a build of the module in dir reads and does not
// write itself: each build input under dir and, given the records of the
// last build (g, which may be nil), every other file they name wherever it
// is, and the kernel tree's configuration and symbols.
func InputStamps(dir string, g *Graph) Stamps {
	s := Stamps{}
	WalkFiles(dir, func(path string, fi fs.FileInfo) {
		if buildfiles.IsInput(filepath.Base(path)) {
			s[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	if g != nil {
		for p := range g.inputs {
			if _, ok := s[p]; !ok {
				s[p] = stampOf(p)
			}
		}
	}
	return s
}

// AsOf stamps g's inputs as the build that wrote its records saw them
// (before: InputStamps when it started at start, which its end matched),
// where known: a file changed after the build and before Read shows as
// changed to Check, and one added under the module dir then, as added. A
// file before does not name (one outside the module dir that the records
// name since this build) counts as changed if it changed after start.
func (g *Graph) AsOf(before Stamps, start time.Time) {
	for p, cur := range g.inputs {
		st, ok := before[p]
		switch {
		case !ok && g.inDir(p) && buildfiles.IsInput(filepath.Base(p)):
			// InputStamps would have stamped it: it came after the start
			delete(g.inputs, p)
			delete(g.stamps, p)
			continue
		case !ok && cur.mtime.Before(start):
			continue
		case !ok:
			st = stamp{} // unknown as the build saw it: Check finds it changed
		}
		g.inputs[p] = st
		for _, m := range []map[string]stamp{g.stamps, g.tree} {
			if _, in := m[p]; in {
				m[p] = st
			}
		}
	}
}

// inDir reports whether p is under the module dir.
func (g *Graph) inDir(p string) bool { return strings.HasPrefix(p, g.Dir+"/") }

// Inputs returns the InputStamps of g's module as Read saw them.
func (g *Graph) Inputs() Stamps { return g.inputs }

// writes reports whether the module's build writes p, a file its records
// name: one of Kbuild's outputs in the module dir (x.mod.c).
func (g *Graph) writes(p string) bool {
	return g.inDir(p) && buildfiles.IsOutput(filepath.Base(p))
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{fi.ModTime(), fi.Size()}
}

// treeFiles change with the kernel tree's configuration or its exported
// symbols; a module built against a changed tree needs the full make.
var treeFiles = []string{".config", "include/config/auto.conf", "Module.symvers"}

// Read reads what the last make built in dir, as Kbuild recorded it, with
// what make ran for it (rec): the modules modules.order names, the objects
// each module's .mod file lists, and the records (.NAME.cmd) of those
// alone. make leaves the object and record of a part renamed away behind,
// and a module's tree may hold files that only look like records: those are
// no part of the build, so they are never read, let alone run.
func Read(dir string, rec *Recording) (*Graph, error) {
	if rec == nil || len(rec.order) == 0 {
		return nil, fallbackf(ErrNoRecords, "make ran nothing in %s", dir)
	}
	g := &Graph{Dir: dir, rec: rec, Objects: map[string]*Object{},
		stamps: map[string]stamp{}, tree: map[string]stamp{}, records: map[string]stamp{}}
	WalkFiles(dir, func(path string, fi fs.FileInfo) {
		switch name := filepath.Base(path); {
		case isRecord(name):
			g.records[path] = stamp{fi.ModTime(), fi.Size()}
		case buildfiles.IsInput(name):
			g.stamps[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	if err := g.readRecords(); err != nil {
		return nil, fallbackf(ErrNoRecords, "%v", err)
	}
	for _, o := range g.Objects {
		for _, p := range append(o.Deps, o.Source) {
			if p != "" {
				g.stamps[p] = stampOf(p)
			}
		}
	}
	// What make's lines read from outside the module (modpost, the kernel's
	// Module.symvers, the linker script) and the kernel's configuration.
	for _, r := range rec.recipes {
		for _, p := range r.prereqs {
			if !strings.HasPrefix(p, dir+"/") {
				g.tree[p] = stampOf(p)
			}
		}
	}
	if top := rec.topDir(); top != "" {
		for _, name := range treeFiles {
			p := filepath.Join(top, name)
			g.tree[p] = stampOf(p)
		}
	}
	g.inputs = Stamps{}
	for p, st := range g.stamps {
		if !g.writes(p) {
			g.inputs[p] = st
		}
	}
	maps.Copy(g.inputs, g.tree)
	return g, nil
}

func isRecord(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".cmd")
}

// readRecords reads the records of the modules modules.order names.
func (g *Graph) readRecords() error {
	var err error
	if g.Modules, err = ModulesOrder(g.Dir); err != nil {
		return err
	}
	// modules.order and modpost's Module.symvers have records too, and so,
	// from Linux 6.10, does the .module-common.o every module links.
	for _, name := range []string{"modules.order", "Module.symvers", ".module-common.o"} {
		if err := g.readRecord(filepath.Join(g.Dir, name), false); err != nil {
			return err
		}
	}
	for _, ko := range g.Modules {
		if err := g.readModule(strings.TrimSuffix(ko, ".ko")); err != nil {
			return err
		}
	}
	return nil
}

// readModule reads the records of one module (base is its path without
// .ko): its link, its object, the .mod file that lists the objects linked
// into that (Linux 5.8 on; its record too), their records, and the
// .mod.o modpost made for it.
func (g *Graph) readModule(base string) error {
	if err := g.readRecord(base+".ko", true); err != nil {
		return err
	}
	list, err := os.ReadFile(base + ".mod")
	if err != nil {
		return fmt.Errorf("reading Kbuild's list of the objects of %s: %w", g.rel(base+".ko"), err)
	}
	// The list names objects as the commands that wrote it did: relative
	// to the dir make ran them in.
	dir := g.rec.workdir(base + ".mod")
	objs := []string{base + ".o"}
	for _, p := range strings.Fields(string(list)) {
		objs = append(objs, resolve(dir, p))
	}
	for _, o := range objs {
		if err := g.readRecord(o, true); err != nil {
			return err
		}
	}
	for _, t := range []string{base + ".mod", base + ".mod.o"} {
		if err := g.readRecord(t, false); err != nil {
			return err
		}
	}
	return nil
}

// readRecord reads the record of target, which Kbuild keeps beside it as
// .NAME.cmd; a missing one is an error only if required.
func (g *Graph) readRecord(target string, required bool) error {
	if g.Objects[target] != nil {
		return nil
	}
	path := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".cmd")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Kbuild's record of %s: %w", g.rel(target), err)
	}
	o, err := g.parseRecord(path, data)
	if err != nil {
		return err
	}
	if o.Target != target {
		return fmt.Errorf("%s is the record of %s, not of %s", path, o.Target, g.rel(target))
	}
	g.Objects[target] = o
	return nil
}

// ModulesOrder returns the .ko of each entry of dir/modules.order, which
// names objects as "hello.o", "./hello.ko" or "/abs/dir/hello.o" depending
// on the kernel version.
func ModulesOrder(dir string) ([]string, error) {
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, fmt.Errorf("reading Kbuild's list of modules: %w", err)
	}
	var kos []string
	for _, entry := range strings.Split(string(order), "\n") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if !filepath.IsAbs(entry) {
			entry = filepath.Join(dir, entry)
		}
		switch filepath.Ext(entry) {
		case ".ko":
			kos = append(kos, filepath.Clean(entry))
		case ".o":
			kos = append(kos, filepath.Clean(strings.TrimSuffix(entry, ".o")+".ko"))
		default:
			return nil, fmt.Errorf("unexpected entry %q in %s/modules.order", entry, dir)
		}
	}
	if len(kos) == 0 {
		return nil, fmt.Errorf("no module built: %s/modules.order is empty, so obj-m in the Kbuild file names nothing", dir)
	}
	return kos, nil
}

// recordKinds are the variables a record sets for its target.
var recordKinds = map[string]bool{"cmd": true, "savedcmd": true, "source": true, "deps": true}

// parseRecord parses one .NAME.cmd file: `cmd_T := ...` (`savedcmd_T :=`
// from Linux 6.2), `source_T := ...` and `deps_T := \` followed by one
// dependency per line, as fixdep (or, for Rust, Kbuild's sed over rustc's
// dep-info) wrote them.
func (g *Graph) parseRecord(path string, data []byte) (*Object, error) {
	var o *Object
	inDeps := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if inDeps {
			dep, more := strings.CutSuffix(strings.TrimSpace(line), `\`)
			dep = strings.TrimSpace(dep)
			if dep != "" {
				g.addDep(o, dep)
			}
			inDeps = more
			continue
		}
		// gen_objtooldep's line: "$@: $(wildcard $(objtool))".
		if o != nil {
			if tool, ok := strings.CutPrefix(line, o.key+": $(wildcard "); ok && strings.HasSuffix(tool, ")") {
				o.objtool = strings.TrimSuffix(tool, ")")
				g.addDep(o, line[len(o.key)+2:])
				continue
			}
		}
		key, val, ok := strings.Cut(line, " := ")
		if !ok {
			continue
		}
		kind, target, _ := strings.Cut(key, "_")
		if !recordKinds[kind] || target == "" || (o != nil && target != o.key) {
			continue
		}
		if o == nil {
			o = &Object{file: path, key: target, wild: map[string]bool{}}
			o.dir = g.recordDir(path, target)
			o.Target = resolve(o.dir, target)
		}
		switch kind {
		case "cmd", "savedcmd":
			o.Cmd, o.raw = strings.TrimSpace(val), val
		case "source":
			o.rawSource = strings.TrimSpace(val)
			o.Source = resolve(o.dir, o.rawSource)
		case "deps":
			inDeps = strings.HasSuffix(strings.TrimSpace(val), `\`)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if o == nil || o.Cmd == "" {
		return nil, fmt.Errorf("%s is not a Kbuild record: no cmd_ or savedcmd_ line", path)
	}
	return o, nil
}

// addDep adds a dependency as a record names it: a path, or
// "$(wildcard path)" for one that need not exist.
func (g *Graph) addDep(o *Object, dep string) {
	w, wild := strings.CutPrefix(dep, "$(wildcard ")
	if wild {
		dep = strings.TrimSuffix(w, ")")
	}
	p := resolve(o.dir, dep)
	o.Deps = append(o.Deps, p)
	if wild {
		o.wild[p] = true
	}
}

// recordDir is the directory a record's relative paths start from: the one
// its target names itself from (.NAME.cmd sits beside NAME), else the one
// make ran the target's lines in.
func (g *Graph) recordDir(file, key string) string {
	target := filepath.Join(filepath.Dir(file), strings.TrimSuffix(strings.TrimPrefix(filepath.Base(file), "."), ".cmd"))
	if !filepath.IsAbs(key) {
		if d, ok := strings.CutSuffix(target, "/"+filepath.Clean(key)); ok {
			return d
		}
	}
	return g.rec.workdir(target)
}

// Check returns why the fast path cannot stand in for the full make since
// Read, or nil if it can: every file that changed is a source or a
// dependency Kbuild recorded, and no Kbuild file, kernel tree file or
// source set changed. now is InputStamps(g.Dir, g), taken when the build
// starts.
func (g *Graph) Check(now Stamps) error {
	for p, s := range g.tree {
		if now[p] != s {
			return fallbackf(ErrKernelTreeChanged, "the kernel tree changed (%s)", p)
		}
	}
	for p := range now {
		_, known := g.stamps[p]
		if _, tree := g.tree[p]; !known && !tree {
			return fallbackf(ErrSourceAdded, "%s was added", g.rel(p))
		}
	}
	recorded := map[string]bool{}
	for _, o := range g.Objects {
		recorded[o.Source] = true
		for _, d := range o.Deps {
			recorded[d] = true
		}
	}
	for p, s := range g.stamps {
		cur, ok := now[p]
		if !ok { // a file the build writes
			cur = stampOf(p)
		}
		switch {
		case cur == s:
		case buildfiles.IsKbuildFile(filepath.Base(p)):
			return fallbackf(ErrKbuildChanged, "%s changed", g.rel(p))
		case cur == stamp{} && g.inDir(p):
			return fallbackf(ErrSourceRemoved, "%s was removed", g.rel(p))
		case !recorded[p]:
			return fallbackf(ErrUnrecordedFile, "%s changed and no Kbuild record names it", g.rel(p))
		case !g.inDir(p):
			return fallbackf(ErrKernelTreeChanged, "the kernel tree changed (%s)", p)
		}
	}
	return nil
}

// Reread returns the records as they are now if a make other than
// kwatch's wrote them since Read (a record changed, came or went), else g.
// The fast path replays against them, and Check still compares with Read.
func (g *Graph) Reread() (*Graph, error) {
	now := map[string]stamp{}
	WalkFiles(g.Dir, func(path string, fi fs.FileInfo) {
		if isRecord(filepath.Base(path)) {
			now[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	if maps.Equal(now, g.records) {
		return g, nil
	}
	return Read(g.Dir, g.rec)
}

func (g *Graph) rel(p string) string {
	if r, err := filepath.Rel(g.Dir, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// WalkFiles calls fn for each regular file under dir, skipping dot-directories.
func WalkFiles(dir string, fn func(path string, fi fs.FileInfo)) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if path != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			fn(path, fi)
		}
		return nil
	})
}

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
	records map[string]stamp // the .NAME.cmd files
}

// stamp is what tells a file's content changed without reading it; the zero
// stamp means the file did not exist.
type stamp struct {
	mtime time.Time
	size  int64
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

// Read reads the records a finished build left in dir, with what make ran
// for them (rec).
func Read(dir string, rec *Recording) (*Graph, error) {
	if rec == nil || len(rec.order) == 0 {
		return nil, fallbackf(ErrNoRecords, "make ran nothing in %s", dir)
	}
	g := &Graph{Dir: dir, rec: rec, Objects: map[string]*Object{},
		stamps: map[string]stamp{}, tree: map[string]stamp{}, records: map[string]stamp{}}
	var errs []error
	WalkFiles(dir, func(path string, fi fs.FileInfo) {
		name := filepath.Base(path)
		switch {
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".cmd"):
			g.records[path] = stamp{fi.ModTime(), fi.Size()}
			if err := g.readCmd(path); err != nil {
				errs = append(errs, err)
			}
		case buildfiles.IsInput(name):
			g.stamps[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	if len(errs) > 0 {
		return nil, fallbackf(ErrNoRecords, "%v", errs[0])
	}
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, fallbackf(ErrNoRecords, "reading Kbuild's records: %v", err)
	}
	for _, line := range strings.Fields(string(order)) {
		ko := resolve(rec.workdir(""), strings.TrimSuffix(line, ".o"))
		if !strings.HasSuffix(ko, ".ko") {
			ko += ".ko"
		}
		if g.Objects[ko] == nil {
			return nil, fallbackf(ErrNoRecords, "no Kbuild record of how %s was linked", ko)
		}
		g.Modules = append(g.Modules, ko)
	}
	if len(g.Modules) == 0 {
		return nil, fallbackf(ErrNoRecords, "modules.order in %s names no module", dir)
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
	return g, nil
}

// readCmd parses one .NAME.cmd file: `cmd_T := ...` (or `savedcmd_T := ...`,
// as newer Kbuilds write it), `source_T := ...` and
// `deps_T := \` followed by one dependency per line, as fixdep (or, for
// Rust, Kbuild's sed over rustc's dep-info) wrote them.
func (g *Graph) readCmd(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
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
		kind, target, ok := strings.Cut(key, "_")
		if !ok || (o != nil && target != o.key) {
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
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if o == nil || o.Cmd == "" {
		return fmt.Errorf("%s is not a Kbuild record: no cmd_ or savedcmd_ line", path)
	}
	g.Objects[o.Target] = o
	return nil
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
// source set changed.
func (g *Graph) Check() error {
	for p, s := range g.tree {
		if stampOf(p) != s {
			return fallbackf(ErrKernelTreeChanged, "the kernel tree changed (%s)", p)
		}
	}
	now := map[string]stamp{}
	WalkFiles(g.Dir, func(path string, fi fs.FileInfo) {
		if buildfiles.IsInput(filepath.Base(path)) {
			now[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	for p := range now {
		if _, ok := g.stamps[p]; !ok {
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
		cur, inDir := now[p]
		if !inDir {
			cur = stampOf(p)
		}
		switch {
		case cur == s:
		case buildfiles.IsKbuildFile(filepath.Base(p)):
			return fallbackf(ErrKbuildChanged, "%s changed", g.rel(p))
		case cur == stamp{} && strings.HasPrefix(p, g.Dir+"/"):
			return fallbackf(ErrSourceRemoved, "%s was removed", g.rel(p))
		case !recorded[p]:
			return fallbackf(ErrUnrecordedFile, "%s changed and no Kbuild record names it", g.rel(p))
		case !strings.HasPrefix(p, g.Dir+"/"):
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
		if name := filepath.Base(path); strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".cmd") {
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

package replay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kwatch/makelog"
)

// FuzzRead reads a module build whose modules.order, object list (m.mod)
// and record of its one object (.a.o.cmd) are the fuzzer's, each with DIR
// for the module dir, and sets up the replay from it: neither may panic,
// whatever the files hold. Nothing here runs a command.
func FuzzRead(f *testing.F) {
	dir, _, rec := fakeBuild(f, "cmd_")
	record, err := os.ReadFile(filepath.Join(dir, ".a.o.cmd"))
	if err != nil {
		f.Fatal(err)
	}
	const order, mod = "DIR/m.ko\n", "DIR/a.o\n"
	seeds := []string{
		strings.ReplaceAll(string(record), dir, "DIR"),
		"cmd_DIR/a.o := gcc -DX -c -o DIR/a.o DIR/a.c\n\nsource_DIR/a.o := DIR/a.c\n\ndeps_DIR/a.o := \\\n  DIR/a.h \\\n  $(wildcard include/config/FOO) \\\n\nDIR/a.o: $(deps_DIR/a.o)\n\n$(deps_DIR/a.o):\n",
		"savedcmd_DIR/a.o := gcc -DX -c -o DIR/a.o DIR/a.c\n\nsource_DIR/a.o := DIR/a.c\n\ndeps_DIR/a.o := \\\n  DIR/a.h \\\n",
		"cmd_DIR/a.o := OBJTREE=/k rustc --edition=2021 -Cdebuginfo=2 --emit=obj=DIR/a.o DIR/a.rs\n\nsource_DIR/a.o := DIR/a.rs\n\ndeps_DIR/a.o := \\\n  DIR/a.rs \\\n",
		"cmd_DIR/a.o := gcc -DX=$(pound)1 -DY='$$x' -c -o DIR/a.o DIR/a.c\n#SYMVER a 0x1\n",
		"not a record\n",
	}
	for _, s := range seeds {
		f.Add(order, mod, s)
	}
	f.Add("./m.ko\n", "a.o\n", seeds[1])
	f.Add("DIR/m.o\nDIR/n.o\n", "DIR/a.o DIR/sub/b.o\n", seeds[1])
	write := func(t *testing.T, name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, order, mod, record string) {
		write(t, "modules.order", order)
		write(t, "m.mod", mod)
		write(t, ".a.o.cmd", record)
		g, err := Read(dir, rec)
		if err != nil {
			return
		}
		// Only what the last make built: the modules, their objects and
		// the records beside them.
		built := map[string]bool{}
		for _, name := range []string{"modules.order", "Module.symvers", ".module-common.o"} {
			built[filepath.Join(dir, name)] = true
		}
		for _, ko := range g.Modules {
			base := strings.TrimSuffix(ko, ".ko")
			for _, suffix := range []string{".ko", ".o", ".mod", ".mod.o"} {
				built[base+suffix] = true
			}
			list, _ := os.ReadFile(base + ".mod")
			for _, p := range strings.Fields(string(list)) {
				built[resolve(rec.workdir(base+".mod"), p)] = true
			}
		}
		for target, o := range g.Objects {
			if !built[target] {
				t.Errorf("read the record of %s, which the last make did not build", target)
			}
			if !filepath.IsAbs(target) || filepath.Clean(target) != target || o.Target != target {
				t.Errorf("a record's target %q (key %q) is not a clean absolute path", target, o.key)
			}
			for _, dep := range append(o.Deps, o.Source) {
				if dep != "" && !filepath.IsAbs(dep) {
					t.Errorf("the record of %s names %q, not an absolute path", target, dep)
				}
			}
			g.compileCommand(o)
		}
		g.Check(InputStamps(dir, g))
		g.Replay()
	})
}

// FuzzRecord parses one record (DIR is the module dir) and everything the
// replay makes of it: its compile command for editors, its unescaped
// command, and its target's lines split into those that run now and those
// that only write the record. None of it may panic. Nothing here runs a
// command.
func FuzzRecord(f *testing.F) {
	dir := "/m"
	for _, s := range []string{
		"cmd_DIR/a.o := gcc -DX=$(pound)1 -c -o DIR/a.o DIR/a.c ; ./tools/objtool/objtool --module DIR/a.o\n\nsource_DIR/a.o := DIR/a.c\n\ndeps_DIR/a.o := \\\n  DIR/a.h \\\n  include/linux/k.h \\\n    $(wildcard include/config/FOO) \\\n\nDIR/a.o: $(deps_DIR/a.o)\n\n$(deps_DIR/a.o):\n\nDIR/a.o: $(wildcard ./tools/objtool/objtool)\n",
		"cmd_DIR/a.o := gcc -DX -c -o DIR/a.o DIR/a.c\n\nsource_DIR/a.o := DIR/a.c\n",
		"savedcmd_DIR/a.o := gcc -DX -c -o DIR/a.o DIR/a.c\n\nsource_DIR/a.o := DIR/a.c\n",
		"cmd_DIR/a.o := OBJTREE=/k rustc --edition=2021 --emit=obj=DIR/a.o DIR/a.rs\n\nsource_DIR/a.o := DIR/a.rs\n\ndeps_DIR/a.o := \\\n  DIR/a.rs \\\n",
		"cmd_DIR/m.ko := ld -r -T scripts/module.lds -o DIR/m.ko DIR/m.o DIR/m.mod.o\n",
		"cmd_DIR/a.o := gcc -DY='$$x' -c -o DIR/a.o DIR/a.c\n#SYMVER a 0x1\n",
	} {
		f.Add(s)
	}
	rec := Learn(nil, dir, []makelog.Line{{Target: dir + "/a.o", Dir: "/k", Text: "gcc -c -o /m/a.o /m/a.c", PID: 2, Make: 1}})
	f.Fuzz(func(t *testing.T, record string) {
		g := &Graph{Dir: dir, rec: rec, Objects: map[string]*Object{}}
		o, err := g.parseRecord(dir+"/.a.o.cmd", []byte(strings.ReplaceAll(record, "DIR", dir)))
		if err != nil {
			return
		}
		if !filepath.IsAbs(o.Target) || filepath.Clean(o.Target) != o.Target || o.Cmd == "" {
			t.Errorf("a record of %q (key %q) with command %q", o.Target, o.key, o.Cmd)
		}
		g.compileCommand(o)
		cmd, err := unescape(o.raw)
		if err != nil {
			return
		}
		line := makelog.Line{Target: o.key, Dir: "/k", Text: "set -e; " + cmd + "; scripts/basic/fixdep " + dir + "/.a.o.d " + o.key + " 'x' > " + o.file + "; rm -f " + dir + "/.a.o.d"}
		deferRecord(&recipe{target: o.Target, lines: []makelog.Line{line}}, o, func(makelog.Line) bool { return true })
	})
}

// FuzzDepFile reads the compiler's dependency file of an object whose
// record is still to be written (D is the object's dir), as a srcversion
// needs it: it may not panic.
func FuzzDepFile(f *testing.F) {
	dir := f.TempDir()
	o := &Object{key: dir + "/x.o", Target: dir + "/x.o", Source: dir + "/x.c", Deps: []string{dir + "/a.h", "/k/include/k.h"}}
	s := &step{o: o, depfiles: []string{filepath.Join(dir, ".x.o.d")}, late: []makelog.Line{{}}}
	p := &Replay{ran: []*step{s}, late: []lateRecord{{o: o}}}
	for _, s := range []string{
		"D/x.o: D/x.c D/a.h \\\n /k/include/k.h\n",
		"D/x.o: D/x.c include/k.h D/a.h\n\nD/x.d: D/x.c D/a.h\nD/a.h:\n",
		"D/x.o: D/x.c D/a\\ b.h\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dep string) {
		if err := os.WriteFile(filepath.Join(dir, ".x.o.d"), []byte(strings.ReplaceAll(dep, "D/", dir+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		p.sameLocalDeps()
	})
}

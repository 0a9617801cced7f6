package builder

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"kwatch/guest/vm/vmtest"
	"kwatch/replay"
)

// step is one edit of a module's sources and how the next build must go.
type step struct {
	name     string
	edit     func(t *testing.T, dir string)
	wantPath string // PathFast or PathKbuild
	wantErr  bool   // the build fails (and so does the full make)
	why      error  // why the fast path falls back (PathKbuild)
}

func replaceIn(file, old, new string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { edit(t, filepath.Join(dir, file), old, new) }
}

func writeIn(file, content string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, file), content) }
}

func appendTo(file, text string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, file), string(data)+text)
	}
}

// cSteps are the edits every C example goes through; src is the file with
// module_init, ver the version macro's line in it (or in a header).
func cSteps(src, verFile, ver string) []step {
	return []step{
		{"body change", replaceIn(verFile, ver+" 1", ver+" 2"), PathFast, false, nil},
		{"new kernel #include", replaceIn(src, "#include <linux/init.h>", "#include <linux/init.h>\n#include <linux/jiffies.h>"), PathFast, false, nil},
		{"new local header", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "kw_extra.h"), "#define KW_EXTRA 1\n")
			edit(t, filepath.Join(dir, src), "#include <linux/init.h>", "#include <linux/init.h>\n#include \"kw_extra.h\"")
		}, PathKbuild, false, replay.ErrSourceAdded},
		{"header change", writeIn("kw_extra.h", "#define KW_EXTRA 2\nstatic inline int kw_extra(void) { return KW_EXTRA; }\n"), PathFast, false, nil},
		{"new EXPORT_SYMBOL", appendTo(src, "\nint kw_exported(void) { return kw_extra(); }\nEXPORT_SYMBOL_GPL(kw_exported);\n"), PathFast, false, nil},
		{"syntax error", appendTo(src, "\nint kw_broken(void) { return 1 }\n"), PathFast, true, nil},
		{"syntax error fixed", replaceIn(src, "return 1 }", "return 1; }\nEXPORT_SYMBOL_GPL(kw_broken);"), PathFast, false, nil},
		{"exports removed", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, src), "EXPORT_SYMBOL_GPL(kw_exported);", "")
			edit(t, filepath.Join(dir, src), "EXPORT_SYMBOL_GPL(kw_broken);", "")
		}, PathFast, false, nil},
		{"new header, not included yet", writeIn("kw_later.h", "#define KW_LATER 1\n"), PathKbuild, false, replay.ErrSourceAdded},
		// MODULE_VERSION's srcversion hashes the local files the object's
		// record names: the record of this compile, not the last.
		{"existing header included", replaceIn(src, "#include <linux/init.h>", "#include <linux/init.h>\n#include \"kw_later.h\""), PathFast, false, nil},
		{"new file", writeIn("kw_unused.c", "int kw_unused;\n"), PathKbuild, false, replay.ErrSourceAdded},
		{"Kbuild edit", appendTo("Kbuild", "ccflags-y += -DKW_FLAG=1\n"), PathKbuild, false, replay.ErrKbuildChanged},
		{"body change after Kbuild edit", replaceIn(verFile, ver+" 2", ver+" 3"), PathFast, false, nil},
		// Two replays saw genksyms' test for exports write nothing: it runs
		// alongside the rest, and the first export makes make redo it.
		{"body change, checks learned", replaceIn(verFile, ver+" 3", ver+" 4"), PathFast, false, nil},
		{"new EXPORT_SYMBOL, its check learned", appendTo(src, "\nint kw_exported2(void) { return 2; }\nEXPORT_SYMBOL_GPL(kw_exported2);\n"), PathKbuild, false, replay.ErrCheckWrote},
		{"body change with an export", replaceIn(verFile, ver+" 4", ver+" 5"), PathFast, false, nil},
	}
}

// TestFastPathEquivalence edits real modules and checks after each edit
// that the build took the path it should (and, if it fell back, why), that
// the full make then has nothing left to do, and that the module equals, in
// code and data, the one the full make builds from scratch: the C modules
// against each installed Debian kernel, the Rust one against the Rust tree.
func TestFastPathEquivalence(t *testing.T) {
	if testing.Short() {
		t.Skip("builds real modules")
	}
	type module struct {
		example string
		steps   []step
	}
	cModules := []module{
		{"hello-c", append(cSteps("hello.c", "hello.c", "#define HELLO_VERSION"),
			step{"second module", func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "kw_second.c"), "#include <linux/module.h>\nstatic int __init kw_init(void) { return 1; }\n"+
					"module_init(kw_init);\nMODULE_LICENSE(\"GPL\");\n")
				appendTo("Kbuild", "obj-m += kw_second.o\n")(t, dir)
			}, PathKbuild, false, replay.ErrSourceAdded},
			step{"second module's body change", replaceIn("kw_second.c", "return 1;", "return 0;"), PathFast, false, nil},
		)},
		{"printerfact-c", cSteps("printerfact.c", "printerfact.c", "#define PRINTERFACT_VERSION")},
		{"tally-c", append([]step{
			{"shared header change", replaceIn("tally.h", "TALLY_STEP 1", "TALLY_STEP 2"), PathFast, false, nil},
		}, cSteps("main.c", "tally.h", "#define TALLY_VERSION")...)},
	}
	kernels := vmtest.Debian()
	if len(kernels) == 0 {
		t.Fatal("no Debian kernel installed: run scripts/setup.sh")
	}
	for _, k := range kernels {
		t.Run(k.Name, func(t *testing.T) {
			for _, mod := range cModules {
				t.Run(mod.example, func(t *testing.T) { equivalence(t, k.Build, mod.example, mod.steps) })
			}
		})
	}
	t.Run("rust", func(t *testing.T) {
		equivalence(t, rustTreeForTest(t), "hello-rust", []step{
			{"body change", replaceIn("hello_rust.rs", "VERSION: u32 = 1", "VERSION: u32 = 2"), PathFast, false, nil},
			{"syntax error", replaceIn("hello_rust.rs", "Ok(HelloRust)", "Ok(HelloRust"), PathFast, true, nil},
			{"syntax error fixed", replaceIn("hello_rust.rs", "Ok(HelloRust", "Ok(HelloRust)"), PathFast, false, nil},
			{"new file", writeIn("kw_unused.rs", "// not built\n"), PathKbuild, false, replay.ErrSourceAdded},
			{"Kbuild edit", appendTo("Kbuild", "# edited\n"), PathKbuild, false, replay.ErrKbuildChanged},
			{"body change after Kbuild edit", replaceIn("hello_rust.rs", "VERSION: u32 = 2", "VERSION: u32 = 3"), PathFast, false, nil},
		})
	})
}

// equivalence builds a copy of an example against kdir, then makes each
// edit and checks the build that follows.
func equivalence(t *testing.T, kdir, example string, steps []step) {
	dir := copyExample(t, example)
	m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatal(err)
	}
	m.EditorFiles = true
	var log syncBuffer
	if res, err := m.Build(context.Background(), &log); err != nil || res.Path != PathKbuild {
		t.Fatalf("first build: path %q, %v\n%s", res.Path, err, log.String())
	}
	// The editor's file names the module's own sources.
	editorFile := "compile_commands.json"
	if strings.HasSuffix(example, "-rust") {
		editorFile = "rust-project.json"
	}
	if data, err := os.ReadFile(filepath.Join(dir, editorFile)); err != nil || !strings.Contains(string(data), `"`+dir+"/") {
		t.Errorf("%s after the first build: %v\n%.500s", editorFile, err, data)
	}
	for _, st := range steps {
		st.edit(t, dir)
		var log syncBuffer
		start := time.Now()
		res, err := m.Build(context.Background(), &log)
		took := time.Since(start)
		if res.Path != st.wantPath || (st.wantPath == PathFast) != (res.Via == ViaDirect) ||
			(st.why == nil) != (res.Fallback == nil) || !errors.Is(res.Fallback, st.why) {
			t.Errorf("%s: path %q via %q (fallback: %v), want %q (direct if fast; fallback: %v)\n%s",
				st.name, res.Path, res.Via, res.Fallback, st.wantPath, st.why, log.String())
		}
		if st.wantErr {
			var be *Error
			if !errors.As(err, &be) {
				t.Fatalf("%s: err = %v, want a build error\n%s", st.name, err, log.String())
			}
			if out, err := fullMake(m); err == nil {
				t.Errorf("%s: the full make succeeded where the fast path failed\n%s", st.name, out)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", st.name, err, log.String())
		}
		t.Logf("%s: %s build in %v", st.name, res.Path, took.Round(time.Millisecond))
		checkLikeMake(t, st.name, m, res.KO)
	}
}

// rustTreeForTest returns the Rust kernel tree: KWATCH_RUST_KERNEL (set by
// `make test`), else the cached one.
func rustTreeForTest(t *testing.T) string {
	if tree := os.Getenv("KWATCH_RUST_KERNEL"); tree != "" {
		return tree
	}
	return rustKernelForTest(t)
}

func fullMake(m *Make) (string, error) {
	cmd := exec.Command("make", m.Args...)
	cmd.Dir, cmd.Env = m.Dir, withoutMakeVars(m.Env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// checkLikeMake checks that the full make has nothing to do after a build
// that produced ko (it changes no file in the module dir), and that a full
// make from scratch gives the same code and data and the same records:
// every file but objects and modules (compared by section) byte for byte.
func checkLikeMake(t *testing.T, step string, m *Make, ko string) {
	t.Helper()
	m.Settle() // a direct build writes some records after it returned
	want, err := loadSections(ko)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	built := buildState(t, m.Dir)
	if out, err := fullMake(m); err != nil {
		t.Fatalf("%s: full make: %v\n%s", step, err, out)
	} else if changed := built.changed(buildState(t, m.Dir), true); len(changed) > 0 {
		t.Errorf("%s: the full make after the build changed %s: Kbuild's records were not left as make leaves them\n%s", step, changed, out)
	}
	// From scratch, in the same dir: paths end up in the module too.
	// Kbuild's Args end with the goal, "modules".
	clean := exec.Command("make", append(slices.Clone(m.Args[:len(m.Args)-1]), "clean")...)
	clean.Dir, clean.Env = m.Dir, withoutMakeVars(m.Env)
	if out, err := clean.CombinedOutput(); err != nil {
		t.Fatalf("make clean: %v\n%s", err, out)
	}
	if out, err := fullMake(m); err != nil {
		t.Fatalf("%s: full make from scratch: %v\n%s", step, err, out)
	}
	got, err := loadSections(ko)
	if err != nil {
		t.Fatalf("%s: after make clean and make: %v", step, err)
	}
	if diff := differentSections(want, got); len(diff) > 0 {
		t.Errorf("%s: the module differs from the full make's in %s", step, strings.Join(diff, ", "))
	}
	if differ := built.changed(buildState(t, m.Dir), false); len(differ) > 0 {
		t.Errorf("%s: the build left %s otherwise than a full make from scratch", step, differ)
	}
	// Let the next edit's mtime differ from every output's.
	time.Sleep(10 * time.Millisecond)
}

type fileState struct {
	mtime time.Time
	data  []byte // nil for objects and modules
}

// dirState is what a build left in a module dir, by file name.
type dirState map[string]fileState

// buildState reads the module dir, leaving out the editor files kwatch
// writes itself (make clean removes compile_commands.json).
func buildState(t *testing.T, dir string) dirState {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := dirState{}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || name == "compile_commands.json" || name == "rust-project.json" {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fs := fileState{mtime: fi.ModTime()}
		if ext := filepath.Ext(name); ext != ".o" && ext != ".ko" {
			if fs.data, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		st[name] = fs
	}
	return st
}

// changed names the files that differ between two states: in modification
// time (byTime), else in content; and the files only one of them has.
func (a dirState) changed(b dirState, byTime bool) []string {
	var names []string
	for name, fa := range a {
		fb, ok := b[name]
		switch {
		case !ok:
			names = append(names, name+" (gone)")
		case byTime && !fa.mtime.Equal(fb.mtime), !byTime && !bytes.Equal(fa.data, fb.data):
			names = append(names, name)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			names = append(names, name+" (new)")
		}
	}
	sort.Strings(names)
	return names
}

// clangdErrors runs Debian's clangd on file in dir and returns the number of
// errors it reports.
func clangdErrors(t *testing.T, dir, file string) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("clangd"); err != nil {
		t.Fatal("no clangd: run scripts/setup.sh")
	}
	cmd := exec.Command("clangd", "--check="+file)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`All checks completed, (\d+) errors`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("clangd --check=%s gave no summary:\n%s", file, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n, string(out)
}

// The compile_commands.json a full build writes gives clangd the kernel's
// flags: without it clangd cannot even find the kernel's headers.
func TestEditorFilesClangd(t *testing.T) {
	kdir, _ := headersDirForTest(t)
	dir := copyExample(t, "printerfact-c")
	m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatal(err)
	}
	m.EditorFiles = true
	var log syncBuffer
	if _, err := m.Build(context.Background(), &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	db := filepath.Join(dir, "compile_commands.json")
	if n, out := clangdErrors(t, dir, "printerfact.c"); n != 0 {
		t.Errorf("clangd reports %d errors with the generated compile_commands.json:\n%s", n, out)
	}
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	if n, _ := clangdErrors(t, dir, "printerfact.c"); n == 0 {
		t.Error("clangd reports no errors without compile_commands.json: the check proves nothing")
	}
	// Off: a full build writes nothing.
	m.EditorFiles = false
	edit(t, filepath.Join(dir, "Kbuild"), "obj-m", "# edited\nobj-m")
	if res, err := m.Build(context.Background(), &log); err != nil || res.Path != PathKbuild {
		t.Fatalf("path %q, %v", res.Path, err)
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("compile_commands.json written with EditorFiles off")
	}
}

// A direct rebuild cancelled while the compiler runs stops it and leaves no
// process and no half-made object: the next build redoes the object, and
// the full make then has nothing left to do.
func TestFastPathCancel(t *testing.T) {
	kdir, _ := headersDirForTest(t)
	dir := copyExample(t, "printerfact-c")
	m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	if _, err := m.Build(context.Background(), &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	replaceIn("printerfact.c", "#define PRINTERFACT_VERSION 1", "#define PRINTERFACT_VERSION 2")(t, dir)
	log = syncBuffer{}
	running, err := cancelWhenRunning(m, &log, func() bool {
		return strings.Contains(log.String(), "CC [M]") && len(procsIn(t, dir)) > 0
	})
	if !running || !errors.Is(err, context.Canceled) {
		t.Fatalf("running %v, err = %v; want the build cancelled while it ran\n%s", running, err, log.String())
	}
	if left := procsIn(t, dir); len(left) > 0 {
		t.Errorf("processes left after cancel: %q", left)
	}
	log = syncBuffer{}
	res, err := m.Build(context.Background(), &log)
	if err != nil || res.Via != ViaDirect {
		t.Fatalf("build after cancel: via %q, %v\n%s", res.Via, err, log.String())
	}
	checkLikeMake(t, "after cancel", m, res.KO)
}

// A record another make wrote (here make W=1, which adds warnings to the
// compile) no longer holds the command kwatch's make ran: the fast path
// does not replay it, but runs the per-module makes it learned (with the
// first make's flags), and the module and records are make's.
func TestFastPathSelfCheck(t *testing.T) {
	m, dir := oldestKbuild(t, "printerfact-c")
	var log syncBuffer
	if _, err := m.Build(context.Background(), &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	other := exec.Command("make", append(slices.Clone(m.Args[:len(m.Args)-1]), "W=1", "modules")...)
	other.Dir, other.Env = m.Dir, withoutMakeVars(m.Env)
	if out, err := other.CombinedOutput(); err != nil {
		t.Fatalf("make W=1: %v\n%s", err, out)
	}
	replaceIn("printerfact.c", "#define PRINTERFACT_VERSION 1", "#define PRINTERFACT_VERSION 2")(t, dir)
	log = syncBuffer{}
	res, err := m.Build(context.Background(), &log)
	if err != nil || res.Path != PathFast || res.Via != ViaSteps || !errors.Is(res.Fallback, replay.ErrSelfCheck) {
		t.Fatalf("path %q via %q (fallback %v), %v; want the per-module makes after a failed self-check\n%s", res.Path, res.Via, res.Fallback, err, log.String())
	}
	checkLikeMake(t, "after make W=1", m, res.KO)
	// The records are the first make's again: the next save replays.
	replaceIn("printerfact.c", "#define PRINTERFACT_VERSION 2", "#define PRINTERFACT_VERSION 3")(t, dir)
	if res, err := m.Build(context.Background(), &log); err != nil || res.Via != ViaDirect {
		t.Fatalf("next save: via %q (fallback %v), %v\n%s", res.Via, res.Fallback, err, log.String())
	}
}

// kwatch learns each target from the first make that runs it: in a dir a
// make without kwatch built, its first make only recompiles what changed.
// A save that needs a target no recorded make has run yet takes the full
// make (ErrNotLearned), which learns it: the save after replays.
func TestFastPathLearns(t *testing.T) {
	m, dir := oldestKbuild(t, "tally-c")
	if out, err := fullMake(m); err != nil {
		t.Fatalf("make without kwatch: %v\n%s", err, out)
	}
	time.Sleep(10 * time.Millisecond)
	replaceIn("main.c", "#include", "// edited\n#include")(t, dir)
	var log syncBuffer
	if res, err := m.Build(context.Background(), &log); err != nil || res.Path != PathKbuild {
		t.Fatalf("first build: path %q, %v\n%s", res.Path, err, log.String())
	}
	time.Sleep(10 * time.Millisecond)
	replaceIn("count.c", "#include", "// edited\n#include")(t, dir)
	res, err := m.Build(context.Background(), &log)
	if err != nil || res.Path != PathKbuild || !errors.Is(res.Fallback, replay.ErrNotLearned) || !strings.Contains(res.Fallback.Error(), "count.o") {
		t.Fatalf("count.c edited: path %q (fallback %v), %v; want the full make: make has not built count.o yet\n%s", res.Path, res.Fallback, err, log.String())
	}
	checkLikeMake(t, "count.o learned", m, res.KO)
	replaceIn("count.c", "// edited", "// edited again")(t, dir)
	if res, err := m.Build(context.Background(), &log); err != nil || res.Via != ViaDirect {
		t.Fatalf("count.c edited again: via %q (fallback %v), %v\n%s", res.Via, res.Fallback, err, log.String())
	}
	checkLikeMake(t, "count.o replayed", m, res.KO)
}

// oldestKbuild is the Kbuild builder of a copy of an example against the
// oldest installed Debian kernel.
func oldestKbuild(t *testing.T, example string) (*Make, string) {
	k := vmtest.Oldest()
	if testing.Short() || k.Build == "" {
		t.Skip("builds a real module against an installed Debian kernel")
	}
	dir := copyExample(t, example)
	m, err := Kbuild(dir, KbuildOptions{KDir: k.Build})
	if err != nil {
		t.Fatal(err)
	}
	return m, dir
}

// make leaves behind the object and record of a part, or a module, that the
// Kbuild file no longer names. The fast path builds what the last make
// built, not those: after such an edit (a full make) a change to the
// module builds directly, as make would.
func TestFastPathAfterPartsGo(t *testing.T) {
	headers, _ := headersDirForTest(t)
	gonePart := []string{"count.o", ".count.o.cmd", ".count.o.d"}
	tests := []struct {
		name  string
		edit  func(t *testing.T, dir string)
		ko    string   // the module built after the edit
		stale []string // what make leaves of what the edit took away
	}{
		{"part renamed", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "count.c"), filepath.Join(dir, "counter.c")); err != nil {
				t.Fatal(err)
			}
			edit(t, filepath.Join(dir, "Kbuild"), "count.o", "counter.o")
		}, "tally.ko", gonePart},
		{"part removed", func(t *testing.T, dir string) {
			count, err := os.ReadFile(filepath.Join(dir, "count.c"))
			if err != nil {
				t.Fatal(err)
			}
			appendTo("main.c", string(count))(t, dir)
			if err := os.Remove(filepath.Join(dir, "count.c")); err != nil {
				t.Fatal(err)
			}
			edit(t, filepath.Join(dir, "Kbuild"), " count.o", "")
		}, "tally.ko", gonePart},
		{"module renamed", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "Kbuild"), "obj-m := tally.o\ntally-y", "obj-m := tallied.o\ntallied-y")
		}, "tallied.ko", []string{"tally.ko", "tally.o", "tally.mod", "tally.mod.c", "tally.mod.o",
			".tally.ko.cmd", ".tally.o.cmd", ".tally.mod.cmd", ".tally.mod.o.cmd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyExample(t, "tally-c")
			m, err := Kbuild(dir, KbuildOptions{KDir: headers})
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range []step{
				{"first build", func(*testing.T, string) {}, PathKbuild, false, nil},
				{tt.name, tt.edit, PathKbuild, false, nil},
				{"body change", replaceIn("tally.h", "TALLY_STEP 1", "TALLY_STEP 2"), PathFast, false, nil},
			} {
				st.edit(t, dir)
				var log syncBuffer
				res, err := m.Build(context.Background(), &log)
				if err != nil {
					t.Fatalf("%s: %v\n%s", st.name, err, log.String())
				}
				if res.Path != st.wantPath || (st.wantPath == PathFast) != (res.Via == ViaDirect) {
					t.Fatalf("%s: path %q via %q, want %q (direct if fast)\n%s", st.name, res.Path, res.Via, st.wantPath, log.String())
				}
				if i == 2 {
					if res.KO != filepath.Join(dir, tt.ko) {
						t.Errorf("built %s, want %s", res.KO, tt.ko)
					}
					// make clean removes them, so a make from scratch has none.
					for _, name := range tt.stale {
						if err := os.Remove(filepath.Join(dir, name)); err != nil {
							t.Errorf("make left no %s: %v", name, err)
						}
					}
					checkLikeMake(t, st.name, m, res.KO)
				}
			}
		})
	}
}

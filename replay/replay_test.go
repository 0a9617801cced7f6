package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kwatch/makelog"
)

// fakeBuild lays out what Kbuild leaves after building m.ko from a.c in
// dir against the kernel build dir objtree, its records written with
// prefix ("cmd_" up to Linux 6.1, "savedcmd_" since 6.2), and what make ran.
func fakeBuild(t testing.TB, prefix string) (dir, objtree string, rec *Recording) {
	t.Helper()
	root := t.TempDir()
	dir, objtree = filepath.Join(root, "mod"), filepath.Join(root, "kernel")
	compile := "gcc -DX=\\#1 -c -o DIR/a.o DIR/a.c ; ./tools/objtool/objtool --module DIR/a.o"
	files := map[string]string{
		"mod/Kbuild":        "obj-m := m.o\nm-y := a.o\n",
		"mod/a.c":           "#include \"a.h\"\n",
		"mod/a.h":           "#define A 1\n",
		"mod/unused.h":      "#define U 1\n",
		"mod/modules.order": "DIR/m.ko\n",
		"mod/m.mod":         "DIR/a.o\n",
		"mod/.a.o.cmd": "PREFIXDIR/a.o := " + compile + "\n\n" +
			"source_DIR/a.o := DIR/a.c\n\ndeps_DIR/a.o := \\\n  DIR/a.h \\\n  include/linux/k.h \\\n    $(wildcard include/config/FOO) \\\n\nDIR/a.o: $(deps_DIR/a.o)\n",
		"mod/.m.o.cmd":              "PREFIXDIR/m.o := ld -r -o DIR/m.o DIR/a.o\n",
		"mod/.m.ko.cmd":             "PREFIXDIR/m.ko := ld -r -o DIR/m.ko DIR/m.o DIR/m.mod.o\n",
		"kernel/.config":            "CONFIG_MODULES=y\n",
		"kernel/include/linux/k.h":  "\n",
		"kernel/scripts/module.lds": "\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		content = strings.NewReplacer("PREFIX", prefix, "DIR", dir).Replace(content)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	line := func(pid, mk int, target, text string, prereqs ...string) makelog.Line {
		return makelog.Line{Target: target, Prereqs: prereqs, Dir: objtree, Text: text, PID: pid, Make: mk, Flags: []string{"-c"}}
	}
	sub := "make -f scripts/Makefile.build obj=" + dir
	rec = Learn(nil, dir, []makelog.Line{
		{Target: "x", Text: "gcc --version", PID: 2, Make: 1, Shell: true, Dir: objtree},
		line(3, 1, dir, sub),
		line(5, 3, dir+"/a.o", "set -e; echo '  CC [M]  a.o'; "+strings.ReplaceAll(compile, "DIR", dir)+"; fixdep x > "+dir+"/.a.o.cmd; rm -f "+dir+"/.a.o.d", dir+"/a.c", "FORCE"),
		line(6, 3, dir+"/a.o", "set -e; trap 'rm -f a.o' HUP; "),
		line(7, 3, dir+"/m.o", "ld -r -o "+dir+"/m.o "+dir+"/a.o", dir+"/a.o"),
		line(8, 1, "modules", "make -f scripts/Makefile.modfinal"),
		line(9, 8, dir+"/m.ko", "ld -r -o "+dir+"/m.ko "+dir+"/m.o "+dir+"/m.mod.o", dir+"/m.o", "scripts/module.lds"),
	})
	return dir, objtree, rec
}

func TestRead(t *testing.T) {
	for _, prefix := range []string{"cmd_", "savedcmd_"} {
		t.Run(prefix, func(t *testing.T) {
			dir, objtree, rec := fakeBuild(t, prefix)
			g, err := Read(dir, rec)
			if err != nil {
				t.Fatal(err)
			}
			o := g.Objects[filepath.Join(dir, "a.o")]
			if o == nil {
				t.Fatalf("no record of a.o: %v", g.Objects)
			}
			want := []string{filepath.Join(dir, "a.h"), filepath.Join(objtree, "include/linux/k.h"), filepath.Join(objtree, "include/config/FOO")}
			if o.Source != filepath.Join(dir, "a.c") || strings.Join(o.Deps, " ") != strings.Join(want, " ") {
				t.Errorf("a.o: source %q, deps %q; want %q", o.Source, o.Deps, want)
			}
			if len(g.Modules) != 1 || g.Modules[0] != filepath.Join(dir, "m.ko") {
				t.Errorf("Modules = %q", g.Modules)
			}
			var cc []compileCommand
			if err := json.Unmarshal(g.CompileCommands(), &cc); err != nil {
				t.Fatal(err)
			}
			wantCmd := "gcc -DX=#1 -c -o " + dir + "/a.o " + dir + "/a.c"
			if len(cc) != 1 || cc[0].Command != wantCmd || cc[0].Directory != objtree || cc[0].File != filepath.Join(dir, "a.c") {
				t.Errorf("compile_commands = %+v, want one entry %q", cc, wantCmd)
			}
		})
	}
}

// Since Linux 6.13 make runs a module's lines in the module dir and its
// records name their targets relative to it.
func TestReadRelativeRecords(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		".a.o.cmd":      "savedcmd_a.o := gcc -c -o a.o a.c\n\nsource_a.o := a.c\n\ndeps_a.o := \\\n  a.h \\\n  /k/include/k.h \\\n",
		".m.ko.cmd":     "savedcmd_m.ko := ld -r -o m.ko m.o\n",
		".m.o.cmd":      "savedcmd_m.o := ld -r -o m.o a.o\n",
		"m.mod":         "a.o\n",
		"modules.order": "m.o\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec := Learn(nil, dir, []makelog.Line{{Target: "a.o", Dir: dir, Text: "gcc -c -o a.o a.c", PID: 2, Make: 1}})
	g, err := Read(dir, rec)
	if err != nil {
		t.Fatal(err)
	}
	o := g.Objects[filepath.Join(dir, "a.o")]
	if o == nil || o.Source != filepath.Join(dir, "a.c") || strings.Join(o.Deps, " ") != dir+"/a.h /k/include/k.h" {
		t.Errorf("a.o = %+v", o)
	}
	if len(g.Modules) != 1 || g.Modules[0] != filepath.Join(dir, "m.ko") {
		t.Errorf("Modules = %q", g.Modules)
	}
}

func TestCheck(t *testing.T) {
	later := time.Now().Add(time.Hour)
	touch := func(rel string) func(dir, objtree string) error {
		return func(dir, objtree string) error {
			p := filepath.Join(dir, rel)
			if strings.HasPrefix(rel, "/kernel/") {
				p = filepath.Join(objtree, strings.TrimPrefix(rel, "/kernel/"))
			}
			return os.Chtimes(p, later, later)
		}
	}
	tests := []struct {
		name   string
		change func(dir, objtree string) error
		reason error // nil = the fast path may run
		msg    string
	}{
		{"nothing", func(string, string) error { return nil }, nil, ""},
		{"source", touch("a.c"), nil, ""},
		{"recorded header", touch("a.h"), nil, ""},
		{"header no record names", touch("unused.h"), ErrUnrecordedFile, "unused.h changed and no Kbuild record names it"},
		{"Kbuild", touch("Kbuild"), ErrKbuildChanged, "Kbuild changed"},
		{"source added", func(dir, _ string) error { return os.WriteFile(filepath.Join(dir, "b.c"), nil, 0o644) }, ErrSourceAdded, "b.c was added"},
		{"header removed", func(dir, _ string) error { return os.Remove(filepath.Join(dir, "a.h")) }, ErrSourceRemoved, "a.h was removed"},
		{"kernel config", touch("/kernel/.config"), ErrKernelTreeChanged, "the kernel tree changed"},
		{"kernel header", touch("/kernel/include/linux/k.h"), ErrKernelTreeChanged, "the kernel tree changed"},
		{"what a line read from the kernel", touch("/kernel/scripts/module.lds"), ErrKernelTreeChanged, "the kernel tree changed"},
		{"new kernel config option", func(_, objtree string) error {
			os.MkdirAll(filepath.Join(objtree, "include/config"), 0o755)
			return os.WriteFile(filepath.Join(objtree, "include/config/FOO"), nil, 0o644)
		}, ErrKernelTreeChanged, "the kernel tree changed"},
	}
	// A change made after the build ended and before Read counts too.
	for _, late := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s, late %v", tt.name, late), func(t *testing.T) {
				dir, objtree, rec := fakeBuild(t, "savedcmd_")
				g, err := Read(dir, rec)
				if err != nil {
					t.Fatal(err)
				}
				// As on a first build, which stamps only the module dir; the
				// start is early by what a file's coarse clock may lag, as
				// the builder's is.
				time.Sleep(50 * time.Millisecond)
				before, start := InputStamps(dir, nil), time.Now().Add(-20*time.Millisecond)
				if err := tt.change(dir, objtree); err != nil {
					t.Fatal(err)
				}
				if late {
					if g, err = Read(dir, rec); err != nil {
						t.Fatal(err)
					}
					g.AsOf(before, start)
				}
				got := g.Check(InputStamps(dir, g))
				if !errors.Is(got, tt.reason) || (tt.reason == nil) != (got == nil) || (got != nil && !strings.HasPrefix(got.Error(), tt.msg)) {
					t.Errorf("Check() = %v, want %v (%q)", got, tt.reason, tt.msg)
				}
			})
		}
	}
}

// Learn keeps, per target of the module, what make ran for it: no
// $(shell) call, no sub-make, no line that does nothing; in sub-makes
// ordered as the first make ran them; and what a later make did not run
// stays known while that make still names it.
func TestLearn(t *testing.T) {
	dir, objtree, rec := fakeBuild(t, "cmd_")
	if got := len(rec.recipes[dir+"/a.o"].lines); got != 1 {
		t.Errorf("a.o has %d lines, want 1 (the no-op dropped)", got)
	}
	phases := rec.byPhase()
	if len(phases) != 3 || len(phases[0]) != 0 || len(phases[1]) != 2 || len(phases[2]) != 1 {
		t.Fatalf("phases %v", phases)
	}
	if len(rec.top) != 2 || rec.topDir() != objtree {
		t.Errorf("top make's lines %v, dir %q", rec.top, rec.topDir())
	}
	// A later make relinks m.ko only: a.o's lines stay, m.o's too (m.ko names it).
	next := Learn(rec, dir, []makelog.Line{
		{Target: "modules", Text: "make -f scripts/Makefile.modfinal", PID: 30, Make: 20, Dir: objtree},
		{Target: dir + "/m.ko", Text: "ld -r -o m.ko new", PID: 31, Make: 30, Dir: objtree, Prereqs: []string{dir + "/m.o"}},
	})
	if next.recipes[dir+"/m.ko"].lines[0].Text != "ld -r -o m.ko new" || next.recipes[dir+"/m.o"] == nil {
		t.Errorf("after a second make: %v", next.order)
	}
	if next.recipes[dir+"/a.o"] != nil {
		t.Errorf("a.o kept though the later make's lines name it nowhere")
	}
}

func TestWithoutRunFlags(t *testing.T) {
	env := withoutRunFlags([]string{"A=1", `MAKEFLAGS=rRw -j2 --jobserver-auth=3,4 --no-print-directory -- M=/m SHELL=/k\ -kwatch-make-recipe\ /l RUSTC=/usr/bin/rustc`})
	if got, want := env[1], "MAKEFLAGS=rRw -j2 --no-print-directory -- M=/m RUSTC=/usr/bin/rustc"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Only the records of what the last make built count: a part renamed away
// (make leaves its object and record behind), a record in a subdirectory
// make never built, a file that only looks like a record. None is read,
// and none of their commands runs (the editor file's clang check runs the
// commands of the records it reads through sh).
func TestReadOnlyTheBuild(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // planted in the module dir; DIR is its path
	}{
		{"part renamed away", map[string]string{
			"b.o":      "",
			".b.o.cmd": "cmd_DIR/b.o := gcc `touch DIR/ran` -c -o DIR/b.o DIR/b.c\n\nsource_DIR/b.o := DIR/b.c\n\ndeps_DIR/b.o := \\\n  DIR/a.h \\\n\nDIR/b.o: $(deps_DIR/b.o)\n",
		}},
		{"record in a subdirectory", map[string]string{
			"docs/.x.o.cmd": "cmd_DIR/docs/x.o := gcc `touch DIR/ran` -c -o DIR/docs/x.o DIR/docs/x.c\n",
		}},
		{"record in a hidden subdirectory", map[string]string{
			".git/.x.o.cmd": "cmd_DIR/.git/x.o := gcc `touch DIR/ran` -c -o DIR/.git/x.o DIR/.git/x.c\n",
		}},
		{"not a record", map[string]string{".notes.cmd": "my notes\n"}},
		{"a record under another's name", map[string]string{
			".c.o.cmd": "cmd_DIR/a.o := gcc `touch DIR/ran` -c -o DIR/a.o DIR/a.c\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _, rec := fakeBuild(t, "cmd_")
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			g, err := Read(dir, rec)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := []string{filepath.Join(dir, "a.o"), filepath.Join(dir, "m.ko"), filepath.Join(dir, "m.o")}
			if got := slices.Sorted(maps.Keys(g.Objects)); !slices.Equal(got, want) {
				t.Errorf("records read: %q, want %q", got, want)
			}
			if cc := string(g.CompileCommands()); strings.Count(cc, `"file"`) != 1 {
				t.Errorf("compile_commands.json names more than a.c:\n%s", cc)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Error("a command of a record no make read ran")
			}
		})
	}
}

func TestModulesOrder(t *testing.T) {
	tests := []struct {
		order   string
		want    []string // D/ is the module dir
		wantErr string
	}{
		{"hello.o\n", []string{"D/hello.ko"}, ""},
		{"./hello.ko\n", []string{"D/hello.ko"}, ""},
		{"/abs/dir/hello.o\nother.o\n", []string{"/abs/dir/hello.ko", "D/other.ko"}, ""},
		{"\n  sub/two.ko  \n", []string{"D/sub/two.ko"}, ""},
		{"", nil, "modules.order is empty, so obj-m in the Kbuild file names nothing"},
		{"hello.c\n", nil, `unexpected entry "D/hello.c"`},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "modules.order"), []byte(tt.order), 0o644); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, w := range tt.want {
			want = append(want, strings.Replace(w, "D/", dir+"/", 1))
		}
		got, err := ModulesOrder(dir)
		if !slices.Equal(got, want) || (err != nil) != (tt.wantErr != "") || err != nil && !strings.Contains(err.Error(), strings.ReplaceAll(tt.wantErr, "D/", dir+"/")) {
			t.Errorf("ModulesOrder(%q) = %q, %v; want %q, error %q", tt.order, got, err, want, tt.wantErr)
		}
	}
}

// checkModule lays out a module dir where m.ko is linked from objects
// (each X.o a copy of X.c) and learns what make ran: each object's copy,
// then its second line from second (DIR is the module dir, OUT a dir
// beside it), then the links. replay makes each object's source newer and
// replays with jobs at a time.
func checkModule(t *testing.T, second map[string]string) (dir, out string, rec *Recording, replay func(jobs int) error) {
	root := t.TempDir()
	dir, out = filepath.Join(root, "mod"), filepath.Join(root, "out")
	os.MkdirAll(out, 0o755)
	r := strings.NewReplacer("DIR", dir, "OUT", out)
	objs := slices.Sorted(maps.Keys(second))
	var paths, built []string // as DIR/x.o in texts, and the files
	for _, x := range objs {
		paths = append(paths, "DIR/"+x+".o")
		built = append(built, filepath.Join(dir, x+".o"))
	}
	link := "cat " + strings.Join(paths, " ") + " > DIR/m.o"
	files := map[string]string{
		"m.o": "1", "m.ko": "1", "modules.order": "DIR/m.ko\n", "m.mod": strings.Join(paths, "\n") + "\n",
		".m.o.cmd":  "cmd_DIR/m.o := " + link + "\n",
		".m.ko.cmd": "cmd_DIR/m.ko := cat DIR/m.o > DIR/m.ko\n",
	}
	lines := []makelog.Line{{Target: dir, Text: "make -f Makefile.build", PID: 3, Make: 1}}
	for i, x := range objs {
		files[x+".c"], files[x+".o"] = "1", "1"
		files["."+x+".o.cmd"] = "cmd_DIR/" + x + ".o := cp DIR/" + x + ".c DIR/" + x + ".o\n\nsource_DIR/" + x + ".o := DIR/" + x + ".c\n"
		target := built[i]
		lines = append(lines,
			makelog.Line{Target: target, Prereqs: []string{filepath.Join(dir, x+".c")}, Text: r.Replace("cp DIR/" + x + ".c DIR/" + x + ".o"), PID: 10 + 2*i, Make: 3},
			makelog.Line{Target: target, Prereqs: []string{filepath.Join(dir, x+".c")}, Text: r.Replace(second[x]), PID: 11 + 2*i, Make: 3})
	}
	lines = append(lines,
		makelog.Line{Target: dir + "/m.o", Prereqs: built, Text: r.Replace(link), PID: 6, Make: 3},
		makelog.Line{Target: "modules", Text: "make -f Makefile.modfinal", PID: 8, Make: 1},
		makelog.Line{Target: dir + "/m.ko", Prereqs: []string{dir + "/m.o"}, Text: r.Replace("cat DIR/m.o > DIR/m.ko"), PID: 9, Make: 8})
	os.MkdirAll(dir, 0o755)
	old := time.Now().Add(-time.Hour)
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(r.Replace(content)), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	for i := range lines {
		lines[i].Dir, lines[i].Env, lines[i].Flags = dir, os.Environ(), []string{"-c"}
	}
	rec = Learn(nil, dir, lines)
	n := 0
	replay = func(jobs int) error {
		t.Helper()
		n++
		at := time.Now().Add(time.Duration(n) * time.Hour)
		for _, x := range objs {
			os.Chtimes(filepath.Join(dir, x+".c"), at, at)
		}
		g, err := Read(dir, rec)
		if err != nil {
			t.Fatal(err)
		}
		p, err := g.Replay()
		if err != nil {
			t.Fatal(err)
		}
		run := func(c *exec.Cmd) error { return c.Run() }
		var log bytes.Buffer
		err = p.Run(context.Background(), &log, run, jobs)
		return errors.Join(err, p.Finish(&log, run))
	}
	return dir, out, rec, replay
}

// secondLine is the learned second line of x.o.
func secondLine(rec *Recording, dir, x string) makelog.Line {
	return rec.recipes[filepath.Join(dir, x+".o")].lines[1]
}

// A line after a target's first that replays saw change no file of the
// module dir twice is a check: the next replay runs it alongside the rest of the
// build, and a check that fails still fails the build and removes its
// target, as make would. A line that wrote a file is never one.
func TestChecksRunAlongside(t *testing.T) {
	tests := []struct {
		name  string
		line  string // a.o's second line; OUT/fail makes it fail, or write
		check bool
		wrote bool // OUT/fail makes it write, not fail
	}{
		{"a check", "test ! -e OUT/fail", true, false},
		{"a check with output to /dev/null", "ls OUT/fail 2>/dev/null && exit 1 || :", true, false},
		{"a line that writes a file", "test ! -e OUT/fail && touch DIR/stamp", false, false},
		{"a line that redirects into a file", "test ! -e OUT/fail > OUT/log", false, false},
		{"a line that writes into a dot-directory", "mkdir -p DIR/.kw; date +%N > DIR/.kw/log; test ! -e OUT/fail", false, false},
		// genksyms' test for exports in a module that has none yet
		{"a check that writes at last", "if test -e OUT/fail; then echo CRC >> DIR/.a.o.cmd; fi", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, out, rec, replay := checkModule(t, map[string]string{"a": tt.line})
			for i := range 2 {
				if err := replay(1); err != nil {
					t.Fatalf("replay %d: %v", i+1, err)
				}
			}
			l := secondLine(rec, dir, "a")
			if got := rec.check(l); got != tt.check {
				t.Fatalf("learned as a check: %v, want %v", got, tt.check)
			}
			os.WriteFile(filepath.Join(out, "fail"), nil, 0o644)
			mko := modTime(filepath.Join(dir, "m.ko"))
			err := replay(1)
			if err == nil {
				t.Fatal("the replay succeeded though a.o's line failed")
			}
			if errors.Is(err, ErrCheckWrote) != tt.wrote {
				t.Errorf("replay: %v; want ErrCheckWrote: %v", err, tt.wrote)
			}
			if tt.wrote && rec.check(l) {
				t.Error("a line that wrote is still a check")
			}
			if _, err := os.Stat(filepath.Join(dir, "a.o")); err == nil {
				t.Error("a.o was kept though its line failed")
			}
			// Only a check lets the build go on while it runs.
			if relinked := !modTime(filepath.Join(dir, "m.ko")).Equal(mko); relinked != tt.check {
				t.Errorf("m.ko relinked: %v, want %v", relinked, tt.check)
			}
		})
	}
}

// What another object's lines write while a line is watched (b.o, which
// exports, compiling during a.o's genksyms test) does not count against the
// watched line if a line that ran meanwhile names the file. b.o writes
// while a.o's line runs: each waits for the other's mark in OUT.
func TestCheckLearnedBesideOtherObjects(t *testing.T) {
	const wait = "timeout 30 sh -c 'until test -e OUT/%s; do sleep 0.01; done'"
	aLine := "set -e; touch OUT/a-runs; " + fmt.Sprintf(wait, "b-wrote")
	tests := []struct {
		name   string
		writes string // what b.o's second line writes while a.o's runs
		check  bool
	}{
		// The dependency list named only as a compiler's -Wp,-MMD,FILE is.
		// (No comma in the name: it is the temporary dir's.)
		{"its object and record and dependency list", "cp DIR/b.c DIR/b.o; echo -Wp,-MMD,DIR/.b.o.d | sed 's/^-Wp,-MMD,//' | xargs touch; ls -a DIR | grep -qx '[.]b[.]o[.]d'; echo CRC >> DIR/.b.o.cmd", true},
		{"a file its line does not name plainly", "touch $(echo DIR/stray)", false},
		// Its source: b.o's lines read it, so they are not taken to write it.
		{"a file it reads", "touch DIR/b.c", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bLine := "set -e; " + fmt.Sprintf(wait, "a-runs") + "; " + tt.writes + "; touch OUT/b-wrote"
			dir, out, rec, replay := checkModule(t, map[string]string{"a": aLine, "b": bLine})
			for i := range 2 {
				os.Remove(filepath.Join(out, "a-runs"))
				os.Remove(filepath.Join(out, "b-wrote"))
				if err := replay(2); err != nil {
					t.Fatalf("replay %d: %v", i+1, err)
				}
			}
			if got := rec.check(secondLine(rec, dir, "a")); got != tt.check {
				t.Errorf("a.o's line learned as a check: %v, want %v", got, tt.check)
			}
		})
	}
}

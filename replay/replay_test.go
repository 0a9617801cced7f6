package replay

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Kbuild takes a word of MAKEFLAGS with an "s" for make -s and one with an
// "i" for make -i, which adds -n to modpost's command line, so that the next
// plain make would run modpost again.
func TestCaptureArgsSetNoFlags(t *testing.T) {
	for _, arg := range CaptureArgs {
		for _, w := range strings.Fields(arg)[1:] {
			if !strings.HasPrefix(w, "--") && strings.ContainsAny(w, "si") {
				t.Errorf("CaptureArgs word %q reads as make flags to Kbuild", w)
			}
		}
	}
}

func TestParseEnv(t *testing.T) {
	outer := "MAKELEVEL=0\x00PWD=/src\x00MAKEFLAGS=rR -j2 --jobserver-auth=3,4\x00\x00"
	inner := "PWD=/k\x00MAKELEVEL=1\x00abs_objtree=/k\x00" +
		`MAKEFLAGS=rRw -I/s -j2 --jobserver-auth=4,5 --no-print-directory --eval=modules:\ .kwatch-env --eval=.DEFAULT_GOAL\ := -- M=/m RUSTC=/usr/bin/rustc` + "\x00\x00"
	for _, dump := range []string{outer + inner, inner + outer} {
		env, err := ParseEnv([]byte(dump))
		if err != nil {
			t.Fatal(err)
		}
		if got := lookup(env, "PWD"); got != "/k" {
			t.Errorf("PWD = %q, want the innermost make's /k", got)
		}
		if got, want := lookup(env, "MAKEFLAGS"), "rRw -I/s --no-print-directory -- M=/m RUSTC=/usr/bin/rustc"; got != want {
			t.Errorf("MAKEFLAGS = %q, want %q", got, want)
		}
	}
	if _, err := ParseEnv(nil); err == nil {
		t.Error("ParseEnv(nil) succeeded; want an error: make never reached the modules target")
	}
}

// fakeBuild lays out what Kbuild leaves after building m.ko from a.c in
// dir against the kernel build dir objtree.
func fakeBuild(t testing.TB) (dir, objtree string, env []string) {
	t.Helper()
	root := t.TempDir()
	dir, objtree = filepath.Join(root, "mod"), filepath.Join(root, "kernel")
	files := map[string]string{
		"mod/Kbuild":        "obj-m := m.o\nm-y := a.o\n",
		"mod/a.c":           "#include \"a.h\"\n",
		"mod/a.h":           "#define A 1\n",
		"mod/unused.h":      "#define U 1\n",
		"mod/modules.order": "DIR/m.ko\n",
		"mod/m.mod":         "DIR/a.o\n",
		"mod/.a.o.cmd": "cmd_DIR/a.o := gcc -DX=\\#1 -c -o DIR/a.o DIR/a.c ; ./tools/objtool/objtool --module DIR/a.o\n\n" +
			"source_DIR/a.o := DIR/a.c\n\ndeps_DIR/a.o := \\\n  DIR/a.h \\\n  include/linux/k.h \\\n    $(wildcard include/config/FOO) \\\n\nDIR/a.o: $(deps_DIR/a.o)\n",
		"mod/.m.o.cmd":             "cmd_DIR/m.o := ld -r -o DIR/m.o DIR/a.o\n",
		"mod/.m.ko.cmd":            "cmd_DIR/m.ko := ld -r -o DIR/m.ko DIR/m.o DIR/m.mod.o\n",
		"kernel/.config":           "CONFIG_MODULES=y\n",
		"kernel/include/linux/k.h": "\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, objtree, []string{"abs_objtree=" + objtree, "abs_srctree=" + objtree, "KBUILD_EXTMOD=" + dir}
}

func TestRead(t *testing.T) {
	dir, objtree, env := fakeBuild(t)
	g, err := Read(dir, env)
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
		want   string // "" = the fast path may run
	}{
		{"nothing", func(string, string) error { return nil }, ""},
		{"source", touch("a.c"), ""},
		{"recorded header", touch("a.h"), ""},
		{"header no record names", touch("unused.h"), "unused.h changed and no Kbuild record names it"},
		{"Kbuild", touch("Kbuild"), "Kbuild changed"},
		{"source added", func(dir, _ string) error { return os.WriteFile(filepath.Join(dir, "b.c"), nil, 0o644) }, "b.c was added"},
		{"header removed", func(dir, _ string) error { return os.Remove(filepath.Join(dir, "a.h")) }, "a.h was removed"},
		{"kernel config", touch("/kernel/.config"), "the kernel tree changed (.config)"},
		{"kernel header", touch("/kernel/include/linux/k.h"), "the kernel tree changed"},
		{"new kernel config option", func(_, objtree string) error {
			os.MkdirAll(filepath.Join(objtree, "include/config"), 0o755)
			return os.WriteFile(filepath.Join(objtree, "include/config/FOO"), nil, 0o644)
		}, "the kernel tree changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, objtree, env := fakeBuild(t)
			g, err := Read(dir, env)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.change(dir, objtree); err != nil {
				t.Fatal(err)
			}
			if got := g.Check(InputStamps(dir, g)); !strings.HasPrefix(got, tt.want) || (tt.want == "") != (got == "") {
				t.Errorf("Check() = %q, want %q", got, tt.want)
			}
		})
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
			dir, _, env := fakeBuild(t)
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			g, err := Read(dir, env)
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

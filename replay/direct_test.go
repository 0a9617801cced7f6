package replay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUnescape(t *testing.T) {
	tests := []struct{ raw, want, err string }{
		{"gcc -DX=$(pound)1 -c a.c", "gcc -DX=#1 -c a.c", ""},
		{`awk '!x[$$0]++'`, `awk '!x[$0]++'`, ""},
		{"echo $$$$", "echo $$", ""},
		{"gcc $(CC)", "", "make reference"},
	}
	for _, tt := range tests {
		got, err := unescape(tt.raw)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("unescape(%q) = %q, %v; want %q, %q", tt.raw, got, err, tt.want, tt.err)
		}
	}
}

// The recipe lines are make's expansion of Kbuild's cmd_and_fixdep and
// cmd_and_savecmd, as `make V=1` prints them (less the echo and the traps).
func TestRecipeLines(t *testing.T) {
	o := &Object{key: "/m/a,b.o", raw: ` gcc -DX=$(pound)1 -DN='"a"' -c -o /m/a,b.o /m/a,b.c`}
	if got, want := command(o)+"; "+fixdep(o), ` gcc -DX=#1 -DN='"a"' -c -o /m/a,b.o /m/a,b.c; scripts/basic/fixdep /m/.a_b.o.d /m/a,b.o `+
		`' gcc -DX=$(pound)1 -DN='\''"a"'\'' -c -o /m/a,b.o /m/a,b.c' > /m/.a,b.o.cmd; rm -f /m/.a_b.o.d`; got != want {
		t.Errorf("cmd_and_fixdep:\n got %s\nwant %s", got, want)
	}
	o.objtool = "./tools/objtool/objtool --module"
	if got, want := (&Direct{objtool: "./tools/objtool/objtool"}).objtoolDep(o), `{ echo ; echo '/m/a,b.o: $(wildcard ./tools/objtool/objtool)' ; } >> /m/.a,b.o.cmd`; got != want {
		t.Errorf("cmd_gen_objtooldep:\n got %s\nwant %s", got, want)
	}
	o = &Object{key: "modules.order", raw: "{   echo a.ko; :; } > modules.order"}
	if got, want := andSavecmd(o), `{   echo a.ko; :; } > modules.order; printf '%s\n' 'cmd_modules.order := {   echo a.ko; :; } > modules.order' > ./.modules.order.cmd`; got != want {
		t.Errorf("andSavecmd:\n got %s\nwant %s", got, want)
	}
}

// fakeKbuild lays out a kernel tree whose scripts hold the rules Direct
// mirrors, and the env make would export for it.
func fakeKbuild(t testing.TB, objtree string, env []string) []string {
	t.Helper()
	for name, texts := range mirrored {
		p := filepath.Join(objtree, "scripts", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.Join(texts, "\n\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(objtree, "include/config"), 0o755)
	if err := os.WriteFile(filepath.Join(objtree, "include/config/auto.conf"), []byte("#\nCONFIG_MODVERSIONS=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(env, "srctree="+objtree, "objtree=.", "NM=nm", "CPP=gcc -E", "CC=gcc")
}

// fakeDirectBuild is fakeBuild with every record a Linux 6.1 build leaves
// and the kernel's rules (fakeKbuild), so that Direct takes it.
func fakeDirectBuild(t testing.TB) (dir, objtree string, env []string) {
	t.Helper()
	dir, objtree, env = fakeBuild(t)
	env = fakeKbuild(t, objtree, env)
	for name, content := range map[string]string{
		".Module.symvers.cmd": "cmd_DIR/Module.symvers := sed 's/ko$$/o/' DIR/modules.order | scripts/mod/modpost -T -\n",
		".modules.order.cmd":  "cmd_DIR/modules.order := {   echo DIR/m.ko; :; } > DIR/modules.order\n",
		".m.mod.o.cmd":        "cmd_DIR/m.mod.o := gcc -c -o DIR/m.mod.o DIR/m.mod.c\n\nsource_DIR/m.mod.o := DIR/m.mod.c\n",
		".m.ko.cmd":           "cmd_DIR/m.ko := ld -r -T scripts/module.lds -o DIR/m.ko DIR/m.o DIR/m.mod.o\n",
		".m.o.cmd":            "cmd_DIR/m.o := ld -r -o DIR/m.o @DIR/m.mod\n",
		".m.mod.cmd":          "cmd_DIR/m.mod := printf '%s\\n' a.o > DIR/m.mod\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// a.o's command runs objtool: its record names it too.
	f, err := os.OpenFile(filepath.Join(dir, ".a.o.cmd"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n" + dir + "/a.o: $(wildcard ./tools/objtool/objtool)\n")
	f.Close()
	return dir, objtree, env
}

func TestDirect(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir, objtree string) []string // extra env
		want   string                                           // "" = Direct builds
	}{
		{"Linux 6.1 rules", nil, ""},
		{"other rules", func(t *testing.T, _, objtree string) []string {
			p := filepath.Join(objtree, "scripts/Makefile.build")
			data, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(data), "check-local-export", "check-export", 1)), 0o644)
			return nil
		}, "scripts/Makefile.build differs"},
		{"trimmed symbols", func(t *testing.T, _, objtree string) []string {
			os.WriteFile(filepath.Join(objtree, "include/config/auto.conf"), []byte("#\nCONFIG_TRIM_UNUSED_KSYMS=y\n"), 0o644)
			return nil
		}, "the kernel has CONFIG_TRIM_UNUSED_KSYMS"},
		{"make C=1", func(*testing.T, string, string) []string { return []string{"KBUILD_CHECKSRC=1"} }, "make runs with KBUILD_CHECKSRC=1"},
		// Found by FuzzRecord: the flags were read from between $(CC) and -c.
		{"no flags between the compiler and -c", func(t *testing.T, dir, _ string) []string {
			p := filepath.Join(dir, ".a.o.cmd")
			data, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(data), `gcc -DX=\#1 -c`, "gcc -c", 1)), 0o644)
			return nil
		}, "does not show the compiler flags genksyms needs"},
		{"an object without a direct rule", func(t *testing.T, dir, _ string) []string {
			os.WriteFile(filepath.Join(dir, "m.mod"), []byte(dir+"/a.o\n"+dir+"/s.o\n"), 0o644)
			os.WriteFile(filepath.Join(dir, ".s.o.cmd"), []byte("cmd_"+dir+"/s.o := gcc -c -o "+dir+"/s.o "+dir+"/s.S\n\nsource_"+dir+"/s.o := "+dir+"/s.S\n"), 0o644)
			return nil
		}, "no direct rule for s.o"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, objtree, env := fakeDirectBuild(t)
			if tt.change != nil {
				env = append(env, tt.change(t, dir, objtree)...)
			}
			g, err := Read(dir, env)
			if err != nil {
				t.Fatal(err)
			}
			d, err := g.Direct()
			if tt.want == "" {
				if err != nil || len(d.compiles) != 1 || len(d.links) != 1 || len(d.modules) != 1 || d.btf != "" || !d.modversion {
					t.Errorf("Direct() = %+v, %v", d, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Direct() error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestOutdated(t *testing.T) {
	dir := t.TempDir()
	old, now := time.Now().Add(-time.Hour), time.Now()
	file := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o644)
		os.Chtimes(p, mtime, mtime)
		return p
	}
	target := file("a.o", now)
	o := &Object{Target: target, wild: map[string]bool{filepath.Join(dir, "gone-wild.h"): true}}
	tests := []struct {
		name    string
		prereqs []string
		want    bool
	}{
		{"older prerequisites", []string{file("a.c", old), file("a.h", old)}, false},
		{"a newer prerequisite", []string{file("b.c", old), file("b.h", now.Add(time.Second))}, true},
		{"as old as the target", []string{file("c.c", now)}, false},
		{"a missing wildcard prerequisite", []string{filepath.Join(dir, "gone-wild.h")}, false},
		{"a missing prerequisite", []string{filepath.Join(dir, "gone.h")}, true},
	}
	for _, tt := range tests {
		if got := (&Direct{}).outdated(o, tt.prereqs); got != tt.want {
			t.Errorf("%s: outdated = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !(&Direct{}).outdated(&Object{Target: filepath.Join(dir, "missing.o")}, nil) {
		t.Error("a missing target is not outdated")
	}
}

// modpost's srcversion hashes the files in an object's directory that its
// record names, in order: the old record may stand in for the new one only
// when the compiler's new dependency list names the same ones.
func TestSameLocalDeps(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	o := &Object{key: dir + "/x.o", Target: dir + "/x.o", Source: dir + "/x.c",
		Deps: []string{dir + "/a.h", other + "/k.h", dir + "/b.h", "/k/include/config/FOO"}}
	d := &Direct{g: &Graph{Objtree: dir}, late: []lateRecord{{o: o}}}
	dep := filepath.Join(dir, ".x.o.d")
	tests := []struct {
		name, deps string // D/ is the object's dir, K/ another
		want       bool
	}{
		{"same", "D/x.c D/a.h \\\n K/k.h D/b.h", true},
		{"a kernel header more", "D/x.c D/a.h K/k.h K/l.h D/b.h", true},
		{"a local header more", "D/x.c D/a.h D/c.h K/k.h D/b.h", false},
		{"local headers reordered", "D/x.c D/b.h K/k.h D/a.h", false},
		{"a local header less", "D/x.c D/a.h K/k.h", false},
		{"an escaped space", "D/x.c D/a\\ c.h K/k.h D/b.h", false},
		{"a path not in its plain form", "D/x.c D/../" + filepath.Base(dir) + "/a.h K/k.h D/b.h", false},
		{"a path relative to the kernel tree", "D/x.c D/a.h include/k.h K/k.h D/b.h", true},
		{"more rules after the first (rustc)", "D/x.c D/a.h K/k.h D/b.h\n\nD/x.d: D/x.c D/c.h\nD/c.h:", true},
	}
	for _, tt := range tests {
		deps := strings.NewReplacer("D/", dir+"/", "K/", other+"/").Replace(tt.deps)
		if err := os.WriteFile(dep, []byte(o.Target+": "+deps+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := d.sameLocalDeps([]recipe{{o: o}}); got != tt.want {
			t.Errorf("%s: sameLocalDeps = %v, want %v", tt.name, got, tt.want)
		}
	}
	os.Remove(dep)
	if d.sameLocalDeps([]recipe{{o: o}}) {
		t.Error("no dependency file: sameLocalDeps = true, want false")
	}
	if d.late = nil; !d.sameLocalDeps([]recipe{{o: o}}) {
		t.Error("a record written already: sameLocalDeps = false, want true")
	}
}

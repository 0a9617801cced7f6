package nix

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kwatch/builder"
	"kwatch/guest/vm/vmtest"
	"kwatch/nix/nixtest"
)

func TestDerivationBuild(t *testing.T) {
	nixtest.Need(t)
	flake := nixtest.ModuleFlake(t)
	outLink := filepath.Join(t.TempDir(), "module-result")
	d := &Derivation{Flake: flake, Attr: "module", OutLink: outLink}
	var log bytes.Buffer
	res, err := d.Build(t.Context(), &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.HasSuffix(res.KO, "/updates/hello.ko") || !strings.HasPrefix(res.KO, "/nix/store/") {
		t.Errorf("KO = %s, want the store path's updates/hello.ko", res.KO)
	}
	if name := modName(t, res.KO); name != "hello" {
		t.Errorf("modinfo name = %q", name)
	}
	if !strings.Contains(log.String(), "hello-module> ") || !strings.Contains(log.String(), "hello.ko") {
		t.Errorf("the build log was not streamed:\n%s", log.String())
	}
	if target, err := os.Readlink(outLink); err != nil || !strings.HasPrefix(res.KO, target) {
		t.Errorf("out link %s -> %s (%v)", outLink, target, err)
	}

	nixtest.WriteFile(t, filepath.Join(flake, "src", "hello.c"), "#error broken on purpose\n")
	_, err = d.Build(t.Context(), &log)
	var berr *builder.Error
	if !errors.As(err, &berr) || !strings.Contains(err.Error(), "hello-module") {
		t.Errorf("a failing build returned %v, want a *builder.Error naming the derivation", err)
	}
}

// A module installed compressed comes back as a plain .ko beside the out
// link, whatever the compression.
func TestDerivationCompressed(t *testing.T) {
	nixtest.Need(t)
	flake := nixtest.ModuleFlake(t)
	for _, attr := range []string{"module-zst", "module-gz"} {
		state := t.TempDir()
		d := &Derivation{Flake: flake, Attr: attr, OutLink: filepath.Join(state, "module-result")}
		var log bytes.Buffer
		res, err := d.Build(t.Context(), &log)
		if err != nil {
			t.Fatalf("%s: %v\n%s", attr, err, log.String())
		}
		if res.KO != filepath.Join(state, "module-ko", "hello.ko") {
			t.Errorf("%s: KO = %s, want the plain module beside the out link", attr, res.KO)
		}
		if name := modName(t, res.KO); name != "hello" || !bytes.Contains(readBytes(t, res.KO), []byte("hello: version 1 loaded")) {
			t.Errorf("%s: %s is not the plain hello module (modinfo name %q)", attr, res.KO, name)
		}
	}
}

func TestDerivationUntrackedInput(t *testing.T) {
	nixtest.Need(t)
	flake := nixtest.ModuleFlake(t)
	nixtest.WriteFile(t, filepath.Join(flake, "src", "hello.c"), "#include \"version.h\"\n"+nixtest.HelloC("VERSION"))
	nixtest.WriteFile(t, filepath.Join(flake, "src", "version.h"), "#define VERSION \"3\"\n")
	nixtest.Git(t, flake, "init", "-q")
	nixtest.Git(t, flake, "add", "flake.nix", "src/Kbuild", "src/Makefile", "src/hello.c")
	d := &Derivation{Flake: flake, OutLink: filepath.Join(t.TempDir(), "result")}

	_, err := d.Build(t.Context(), nil)
	var berr *builder.Error
	want := "src/version.h is not tracked by git, so nix cannot see it: git add -N src/version.h"
	if !errors.As(err, &berr) || !strings.Contains(err.Error(), want) || berr.Fix != "git add -N src/version.h" {
		t.Fatalf("Build = %v, want a *builder.Error saying %q", err, want)
	}

	// The hint is right: with the file added to git's index nix sees it.
	nixtest.Git(t, flake, "add", "-N", "src/version.h")
	var log bytes.Buffer
	res, err := d.Build(t.Context(), &log)
	if err != nil {
		t.Fatalf("after git add -N: %v\n%s", err, log.String())
	}
	if !bytes.Contains(readBytes(t, res.KO), []byte("hello: version 3 loaded")) {
		t.Error("the module was not built from src/version.h")
	}
}

func TestGetDevEnv(t *testing.T) {
	nixtest.Need(t)
	flake := nixtest.ModuleFlake(t)
	env, err := Settings{}.GetDevEnv(t.Context(), flake+"#module")
	if err != nil {
		t.Fatal(err)
	}
	_, modules := nixtest.HostKernel(t)
	if got, want := env.Vars["makeFlags"], "KDIR="+filepath.Join(modules, "build"); got != want {
		t.Errorf("makeFlags = %q, want %q", got, want)
	}
	environ := env.Environ()
	for _, want := range []string{"PATH=/usr/bin:/bin", "HOME=" + os.Getenv("HOME"), "name=hello-module"} {
		if !slices.Contains(environ, want) {
			t.Errorf("Environ() lacks %s", want)
		}
	}
	for _, kv := range environ {
		if strings.HasPrefix(kv, "NIX_BUILD_TOP=") || strings.Contains(kv, "homeless-shelter") {
			t.Errorf("Environ() has the sandbox's %s", kv)
		}
	}

	if _, err := (Settings{}).GetDevEnv(t.Context(), flake+"#nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("GetDevEnv of a missing attribute: %v", err)
	}
}

func TestIncrementalBuild(t *testing.T) {
	nixtest.Need(t)
	flake := nixtest.ModuleFlake(t)
	d := &Derivation{Flake: flake, OutLink: filepath.Join(t.TempDir(), "result")}
	want, err := d.Build(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}

	b := &Incremental{Flake: flake, Attr: "module", Src: filepath.Join(flake, "src"), BuildDir: filepath.Join(t.TempDir(), "build")}
	t.Cleanup(b.Settle) // late records are written before the build dir goes
	build := func() (builder.Result, string) {
		t.Helper()
		var log bytes.Buffer
		res, err := b.Build(t.Context(), &log)
		if err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		return res, log.String()
	}
	res, _ := build()
	if res.KO != filepath.Join(b.BuildDir, "hello.ko") || res.Path != builder.PathKbuild {
		t.Errorf("KO = %s through the %q path, want it in the build dir through the full make", res.KO, res.Path)
	}
	if got, want := modName(t, res.KO), modName(t, want.KO); got != want {
		t.Errorf("incremental module is %q, the derivation's %q", got, want)
	}

	if _, log := build(); strings.Contains(log, "CC [M]") {
		t.Errorf("nothing changed, yet make compiled:\n%s", log)
	}
	nixtest.WriteFile(t, filepath.Join(flake, "src", "hello.c"), nixtest.HelloC(`"2"`))
	res, log := build()
	if !strings.Contains(log, "CC [M]") || !bytes.Contains(readBytes(t, res.KO), []byte("hello: version 2 loaded")) {
		t.Errorf("the edit was not built:\n%s", log)
	}
	if res.Path != builder.PathFast {
		t.Errorf("an edit of hello.c took the %q path, want the fast one:\n%s", res.Path, log)
	}

	// The build environment is cached until Invalidate, and so is the fast path.
	flakeNix := filepath.Join(flake, "flake.nix")
	nixtest.WriteFile(t, flakeNix, strings.Replace(readFile(t, flakeNix), `makeFlags = [ "`, `makeFlags = [ "EXTRA=yes" "`, 1))
	if res, log := build(); res.Path != builder.PathFast || strings.Contains(log, "extra flag: yes") {
		t.Errorf("the cached environment was not used (path %q):\n%s", res.Path, log)
	}
	b.Invalidate()
	if res, log := build(); !strings.Contains(log, "extra flag: yes\n") || res.Path != builder.PathKbuild {
		t.Errorf("Invalidate did not fetch the new makeFlags and run the full make (path %q):\n%s", res.Path, log)
	}

	nixtest.WriteFile(t, filepath.Join(flake, "src", "hello.c"), nixtest.HelloC(`"2"`)+"int broken = ;\n")
	var berr *builder.Error
	if _, err := b.Build(t.Context(), nil); !errors.As(err, &berr) {
		t.Errorf("a broken source gave %v, want a *builder.Error", err)
	}
}

func TestFindModule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string // relative to the output; "" = error
	}{
		{"plain preferred", []string{"lib/modules/6.18.1/updates/m.ko.xz", "ko/m.ko"}, "ko/m.ko"},
		{"compressed", []string{"lib/modules/6.18.1/updates/m.ko.xz"}, "lib/modules/6.18.1/updates/m.ko.xz"},
		{"extra", []string{"lib/modules/6.18.1/extra/sub/m.ko.xz"}, "lib/modules/6.18.1/extra/sub/m.ko.xz"},
		{"zstd", []string{"lib/modules/6.18.1/updates/m.ko.zst"}, "lib/modules/6.18.1/updates/m.ko.zst"},
		{"gzip", []string{"lib/modules/6.18.1/extra/m.ko.gz"}, "lib/modules/6.18.1/extra/m.ko.gz"},
		{"same module compressed twice", []string{"lib/modules/6.18.1/updates/m.ko.gz", "lib/modules/6.18.1/updates/m.ko.zst"}, "lib/modules/6.18.1/updates/m.ko.zst"},
		{"same module twice", []string{"ko/m.ko", "lib/modules/6.1.0/updates/m.ko"}, "ko/m.ko"},
		{"none", []string{"share/doc/README"}, ""},
		{"xz elsewhere", []string{"share/m.ko.xz"}, ""},
		{"two modules", []string{"ko/a.ko", "ko/b.ko"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			for _, f := range tc.files {
				nixtest.WriteFile(t, filepath.Join(out, f), "")
			}
			got, err := findModule(out)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("found %s, want an error", got)
				}
				return
			}
			if err != nil || got != filepath.Join(out, tc.want) {
				t.Fatalf("findModule = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// modName returns the name a module's .modinfo gives.
func modName(t *testing.T, ko string) string {
	t.Helper()
	info, err := builder.ReadModinfo(ko)
	if err != nil {
		t.Fatal(err)
	}
	return info.Name
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The incremental build dir keeps what make leaves behind, the object and
// record of a part renamed away among them: the fast path builds what the
// last make built, not those. The test builds against 6.1, whose records
// the fast path reads.
func TestIncrementalPartRenamed(t *testing.T) {
	nixtest.Need(t)
	k := vmtest.Oldest()
	if k.Modules == "" {
		t.Skip("no Debian kernel installed")
	}
	flake := t.TempDir()
	nixtest.WriteFlake(t, flake, nixtest.Flake{Modules: k.Modules})
	nixtest.WriteModule(t, flake)
	src := filepath.Join(flake, "src")
	nixtest.WriteFile(t, filepath.Join(src, "Kbuild"), "obj-m := hello.o\nhello-y := main.o part.o\n")
	if err := os.Rename(filepath.Join(src, "hello.c"), filepath.Join(src, "main.c")); err != nil {
		t.Fatal(err)
	}
	nixtest.WriteFile(t, filepath.Join(src, "part.c"), "int hello_part(void) { return 1; }\n")

	b := &Incremental{Flake: flake, Attr: "module", Src: src, BuildDir: filepath.Join(t.TempDir(), "build")}
	// A fast build's records are written after it returns: they must be
	// before the build dir is removed.
	t.Cleanup(b.Settle)
	for _, st := range []struct {
		name string
		edit func()
		path string
	}{
		{"first build", func() {}, builder.PathKbuild},
		{"part renamed", func() {
			if err := os.Rename(filepath.Join(src, "part.c"), filepath.Join(src, "piece.c")); err != nil {
				t.Fatal(err)
			}
			nixtest.WriteFile(t, filepath.Join(src, "Kbuild"), "obj-m := hello.o\nhello-y := main.o piece.o\n")
		}, builder.PathKbuild},
		{"body change", func() { nixtest.WriteFile(t, filepath.Join(src, "main.c"), nixtest.HelloC(`"2"`)) }, builder.PathFast},
	} {
		st.edit()
		var log bytes.Buffer
		res, err := b.Build(t.Context(), &log)
		if err != nil {
			t.Fatalf("%s: %v\n%s", st.name, err, log.String())
		}
		if res.Path != st.path {
			t.Errorf("%s: the %q path, want the %q one\n%s", st.name, res.Path, st.path, log.String())
		}
		if st.name == "body change" && !bytes.Contains(readBytes(t, res.KO), []byte("hello: version 2 loaded")) {
			t.Errorf("the edit was not built:\n%s", log.String())
		}
	}
}

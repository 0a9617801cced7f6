package nix

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"kwatch/nix/nixtest"
)

func TestSyncTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for name, content := range map[string]string{
		"hello.c":      "v1\n",
		"sub/util.h":   "util\n",
		"Kbuild":       "obj-m := hello.o\n",
		".hello.o.cmd": "kbuild\n",
		"hello.o":      "object from a build by hand\n",
		".git/config":  "git\n",
	} {
		nixtest.WriteFile(t, filepath.Join(src, name), content)
		if err := os.Chtimes(filepath.Join(src, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := syncTree(src, dst); err != nil {
		t.Fatal(err)
	}
	if got, want := listFiles(t, dst), []string{".kwatch-sources", "Kbuild", "hello.c", "sub/util.h"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("build dir has %q, want %q", got, want)
	}

	// A build leaves outputs; then hello.c changes and util.h goes away.
	nixtest.WriteFile(t, filepath.Join(dst, "hello.o"), "object\n")
	time.Sleep(20 * time.Millisecond) // past the file clock's tick
	before, err := os.Stat(filepath.Join(dst, "Kbuild"))
	if err != nil {
		t.Fatal(err)
	}
	// hello.c's new mtime is older than the object, as when it was saved
	// while the compiler worked on the old copy: the copy must still be
	// newer than the object, or make keeps the stale object.
	nixtest.WriteFile(t, filepath.Join(src, "hello.c"), "v2\n")
	if err := os.Chtimes(filepath.Join(src, "hello.c"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "sub", "util.h")); err != nil {
		t.Fatal(err)
	}
	if err := syncTree(src, dst); err != nil {
		t.Fatal(err)
	}
	if got, want := listFiles(t, dst), []string{".kwatch-sources", "Kbuild", "hello.c", "hello.o"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("build dir has %q, want %q", got, want)
	}
	if got := readFile(t, filepath.Join(dst, "hello.c")); got != "v2\n" {
		t.Errorf("hello.c = %q after the change", got)
	}
	obj, err1 := os.Stat(filepath.Join(dst, "hello.o"))
	copied, err2 := os.Stat(filepath.Join(dst, "hello.c"))
	if err1 != nil || err2 != nil || !copied.ModTime().After(obj.ModTime()) {
		t.Errorf("the changed hello.c (%v) is not newer than the build's hello.o (%v): make would keep the stale object", copied.ModTime(), obj.ModTime())
	}
	if got := readFile(t, filepath.Join(dst, "hello.o")); got != "object\n" {
		t.Errorf("the build's hello.o was replaced: %q", got)
	}
	after, err := os.Stat(filepath.Join(dst, "Kbuild"))
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("the unchanged Kbuild was copied again (%v)", err)
	}
}

func TestBuildInput(t *testing.T) {
	for p, want := range map[string]bool{
		"src/new.rs": true, "src/a.c": true, "src/a.h": true, "src/entry.S": true,
		"src/Kbuild": true, "src/Makefile": true, "module.nix": true, "flake.lock": true,
		"src/hello.mod.c": false, "README.md": false, "src/hello.ko": false,
		".kwatch/build/hello.c": false, "src/.new.c.swp": false, "notes.txt": false,
		"src/Kconfig": true, "a/.git/x.c": false,
	} {
		if got := buildInput(p); got != want {
			t.Errorf("buildInput(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestUntrackedInputs(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	repo := t.TempDir()
	flake := filepath.Join(repo, "mod")
	for _, f := range []string{"flake.nix", "src/old.c", "src/new.rs", "src/extra.h", "src/built.o", "notes.txt", "src/.x.c"} {
		nixtest.WriteFile(t, filepath.Join(flake, f), "x\n")
	}
	nixtest.WriteFile(t, filepath.Join(repo, ".gitignore"), "*.o\n")
	nixtest.WriteFile(t, filepath.Join(repo, "outside.c"), "x\n")
	nixtest.Git(t, repo, "init", "-q")
	nixtest.Git(t, repo, "add", ".gitignore", "mod/flake.nix", "mod/src/old.c")
	nixtest.Git(t, repo, "add", "-N", "mod/src/extra.h")

	files, err := untrackedInputs(t.Context(), flake)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"src/new.rs"}; !reflect.DeepEqual(files, want) {
		t.Fatalf("untracked inputs = %q, want %q", files, want)
	}
	want := "src/new.rs is not tracked by git, so nix cannot see it: git add -N src/new.rs"
	if err := untrackedError(files); err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}

	if files, err := untrackedInputs(t.Context(), t.TempDir()); err != nil || files != nil {
		t.Errorf("outside git: %q, %v", files, err)
	}
}

// Every build input gets the hint, Kconfig too (the watcher rebuilt on it
// while the nix sync said nothing).
func TestUntrackedKconfig(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	repo := t.TempDir()
	for _, f := range []string{"flake.nix", "src/Kconfig", "src/Kbuild.include"} {
		nixtest.WriteFile(t, filepath.Join(repo, f), "x\n")
	}
	nixtest.Git(t, repo, "init", "-q")
	nixtest.Git(t, repo, "add", "flake.nix")
	files, err := untrackedInputs(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"src/Kbuild.include", "src/Kconfig"}; !reflect.DeepEqual(files, want) {
		t.Errorf("untracked inputs = %q, want %q", files, want)
	}
}

func TestUntrackedErrorMany(t *testing.T) {
	want := "src/a.rs, src/b.c are not tracked by git, so nix cannot see them: git add -N src/a.rs src/b.c"
	if err := untrackedError([]string{"src/a.rs", "src/b.c"}); err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// listFiles returns the files under dir, relative and slash-separated.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

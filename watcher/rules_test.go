package watcher

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const testGitignore = `# comment, then a blank line

/build/
generated_*.c
!generated_keep.c
docs/**/*.h
**/vendor/
out?.c
/anchored.c
tmpdir/
!tmpdir/keep.c
gen.h/
[abc]class.c
[!x]neg.h
\#hash.c
trailing.c   
`

func TestRelevant(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, ".gitignore"), testGitignore)
	w := newWatcher(t, root, Options{Ignore: []string{"kwatch-state/", "!generated_special.c"}})

	tests := []struct {
		path string
		want bool
	}{
		// inputs
		{"hello.c", true},
		{"hello.h", true},
		{"entry.S", true},
		{"lib.rs", true},
		{"flake.nix", true},
		{"flake.lock", true},
		{"Makefile", true},
		{"Kbuild", true},
		{"Kconfig", true},
		{"Makefile.rust", true},
		{"Kbuild.include", true},
		{"sub/dir/x.c", true},
		{"./x.c", true},
		// not inputs
		{"README.md", false},
		{"hello.s", false},
		{"notes.txt", false},
		{"sedAbC123", false},
		{"", false},
		{".", false},
		{"../x.c", false},
		{"/abs/x.c", false},
		// Kbuild outputs
		{"hello.o", false},
		{"hello.ko", false},
		{"hello.mod", false},
		{"hello.mod.c", false},
		{"hello.mod.o", false},
		{"hello.cmd", false},
		{".hello.o.cmd", false},
		{"modules.order", false},
		{"Module.symvers", false},
		{"libfoo.rmeta", false},
		{"rust-project.json", false},
		{".tmp_versions/x.c", false},
		{".tmp_1234.c", false},
		// dotfiles and dot-dirs anywhere
		{".git/x.c", false},
		{".hidden.c", false},
		{"sub/.hidden/x.c", false},
		// editor temporaries
		{"4913", false},
		{"hello.c~", false},
		{"Makefile~", false},
		{"#hello.c#", false},
		{".#hello.c", false},
		{".hello.c.swp", false},
		{"Makefile.swp", false},
		{"Makefile.c~", false},
		{"hello.c___jb_tmp___", false},
		{"hello.c___jb_old___", false},
		{"Makefile.___jb_old___", false},
		// ignored directories
		{"target/x.rs", false},
		{"sub/target/x.c", false},
		{"results/x.c", true}, // a real directory: nix's result links are symlinks, never followed
		{"result-dir/default.nix", true},
		{"targets/x.c", true},
		// .gitignore
		{"build/x.c", false},
		{"sub/build/x.c", true},
		{"generated_foo.c", false},
		{"sub/generated_bar.c", false},
		{"generated_keep.c", true},
		{"docs/x.h", false},
		{"docs/a/b/x.h", false},
		{"docs/x.c", true},
		{"vendor/x.c", false},
		{"a/b/vendor/x.c", false},
		{"out1.c", false},
		{"out12.c", true},
		{"anchored.c", false},
		{"sub/anchored.c", true},
		{"tmpdir/keep.c", false}, // a file below an ignored directory cannot be re-included
		{"gen.h", true},          // dir-only pattern, and this is a file
		{"gen.h/x.c", false},
		{"aclass.c", false},
		{"dclass.c", true},
		{"yneg.h", false},
		{"xneg.h", true},
		{"#hash.c", false},
		{"trailing.c", false},
		// Options.Ignore, applied after .gitignore
		{"kwatch-state/x.c", false},
		{"generated_special.c", true},
	}
	for _, tt := range tests {
		if got := w.Relevant(tt.path); got != tt.want {
			t.Errorf("Relevant(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestIgnoredDirsUnwatched checks that ignored directories and symlinked
// directories get no watch and that nothing inside them is reported.
func TestIgnoredDirsUnwatched(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "x.c"), "")
	writeFile(t, filepath.Join(root, ".gitignore"), "/build/\n")
	for _, d := range []string{".git/objects", "target/debug", "build", "sub/deeper", "sub/.tmp_versions", "results"} {
		mkdir(t, filepath.Join(root, d))
	}
	for _, link := range []string{"result", "result-1"} { // as nix build leaves them
		if err := os.Symlink(outside, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, root, Options{})

	var got []string
	for _, p := range w.fsw.WatchList() {
		rel, _ := filepath.Rel(w.root, p)
		got = append(got, rel)
	}
	slices.Sort(got)
	if want := []string{".", "results", "sub", "sub/deeper"}; !slices.Equal(got, want) {
		t.Errorf("watched dirs = %q, want %q", got, want)
	}

	for _, d := range []string{".git/objects", "target/debug", "build", "sub/.tmp_versions", "result-1"} {
		writeFile(t, filepath.Join(root, d, "x.c"), "int x;\n")
	}
	writeFile(t, filepath.Join(outside, "x.c"), "int y;\n")
	expectOnlyMarker(t, w, root)
}

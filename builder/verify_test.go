package builder

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"kwatch/builder/buildertest"
	"kwatch/replay"
)

func TestDifferentSections(t *testing.T) {
	a := map[string][]byte{".text": []byte("ab"), ".data": []byte("x"), ".only.a": nil}
	b := map[string][]byte{".text": []byte("ac"), ".data": []byte("x"), ".only.b": nil}
	if got, want := differentSections(a, b), []string{".only.a", ".only.b", ".text"}; !slices.Equal(got, want) {
		t.Errorf("differentSections = %q, want %q", got, want)
	}
	if got := differentSections(a, a); len(got) != 0 {
		t.Errorf("a module differs from itself in %q", got)
	}
}

// flipText changes one byte of a module's code, as a wrong build would.
func flipText(t *testing.T, ko string) {
	t.Helper()
	f, err := elf.Open(ko)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(".text")
	f.Close()
	if s == nil || s.Size == 0 {
		t.Fatalf("%s has no .text", ko)
	}
	data, err := os.ReadFile(ko)
	if err != nil {
		t.Fatal(err)
	}
	data[s.Offset] ^= 0xff
	writeFile(t, ko, string(data))
}

// The correctness net finds nothing after a right fast build; after a
// wrong one (a module that make's records say it must link again) it reports
// the sections that differ, leaves make's module, and turns the fast path off.
func TestVerify(t *testing.T) {
	kdir, _ := headersDirForTest(t)
	dir := copyExample(t, "printerfact-c")
	m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	build := func(wantPath string) Result {
		t.Helper()
		var log syncBuffer
		res, err := m.Build(ctx, &log)
		if err != nil || res.Path != wantPath {
			t.Fatalf("build: path %q, %v; want %q\n%s", res.Path, err, wantPath, log.String())
		}
		return res
	}
	build(PathKbuild)
	if v := m.BeginVerify(ctx); v != nil {
		t.Fatal("BeginVerify after a full make: want nothing to check")
	}
	src := filepath.Join(dir, "printerfact.c")
	now := time.Now()
	os.Chtimes(src, now, now)
	res := build(PathFast)
	if mm, err := m.BeginVerify(ctx)(); mm != nil || err != nil {
		t.Fatalf("check after a right fast build = %v, %v", mm, err)
	}

	flipText(t, res.KO)
	rec := filepath.Join(dir, ".printerfact.ko.cmd")
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, rec, regexp.MustCompile(`:= .*`).ReplaceAllString(string(data), ":= true"))
	mm, err := m.BeginVerify(ctx)()
	if err != nil || mm == nil || !slices.Contains(mm.Sections, ".text") || mm.KO != res.KO {
		t.Fatalf("check after a wrong fast build = %+v, %v; want a mismatch in .text", mm, err)
	}
	if s, err := loadSections(res.KO); err != nil || len(s[".text"]) == 0 {
		t.Fatalf("make's module is not in place: %v", err)
	}
	os.Chtimes(src, now.Add(time.Second), now.Add(time.Second))
	build(PathKbuild)
}

// fastBuilt returns a Make whose last build was a fast one of hello.ko (its
// .text "one"; see fakeRecords) in a dir whose Makefile has recipe as its
// default goal; other.bin is a module whose .text is "two".
func fastBuilt(t *testing.T, recipe string) *Make {
	t.Helper()
	dir, rec := fakeRecords(t, "hello.c")
	writeFile(t, filepath.Join(dir, "Makefile"), "all:\n\t"+recipe+"\n")
	writeFile(t, filepath.Join(dir, "hello.ko"), string(buildertest.ELFWith(".text", []byte("one"))))
	writeFile(t, filepath.Join(dir, "other.bin"), string(buildertest.ELFWith(".text", []byte("two"))))
	g, err := replay.Read(dir, rec)
	if err != nil {
		t.Fatal(err)
	}
	m := &Make{Dir: dir}
	m.setGraph(g, nil, filepath.Join(dir, "hello.ko"), true)
	return m
}

// The correctness net's check: what its make did decides, and a Build that
// starts after BeginVerify stops the check even before it ran, so the two
// makes never share the build dir. A change the fast build never saw, to
// any file its records name, proves nothing against it, and does not turn
// the fast path off.
func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		recipe   string
		before   string   // a shell command run in the module dir before the check
		stopped  bool     // a Build started before the check ran
		mismatch []string // the sections the check finds different
		ran      bool     // the check's make ran
	}{
		{name: "make redoes nothing", recipe: "touch ran", ran: true},
		{name: "make builds another module", recipe: "touch ran; cp other.bin hello.ko", mismatch: []string{".text"}, ran: true},
		{name: "a build starts first", recipe: "touch ran", stopped: true},
		{name: "a save lands during the make", recipe: "touch ran; echo >> hello.c; cp other.bin hello.ko", ran: true},
		{name: "a header outside the module changes during the make", recipe: "touch ran; echo >> ../inc/x.h; cp other.bin hello.ko", ran: true},
		{name: "the kernel tree changes during the make", recipe: "touch ran; echo >> ../kernel/.config; cp other.bin hello.ko", ran: true},
		{name: "a header outside the module changed before the check", before: "echo >> ../inc/x.h", recipe: "touch ran; cp other.bin hello.ko"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fastBuilt(t, tt.recipe)
			if tt.before != "" {
				time.Sleep(10 * time.Millisecond) // a new mtime
				cmd := exec.Command("sh", "-c", tt.before)
				cmd.Dir = m.Dir
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", tt.before, err, out)
				}
			}
			check := m.BeginVerify(context.Background())
			if check == nil {
				t.Fatal("BeginVerify after a fast build: nothing to check")
			}
			if tt.stopped {
				m.StopVerify() // what Build does first
			}
			mm, err := check()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if mm != nil {
				got = mm.Sections
			}
			if !slices.Equal(got, tt.mismatch) {
				t.Errorf("check found %+v, want a mismatch in %q", mm, tt.mismatch)
			}
			if _, err := os.Stat(filepath.Join(m.Dir, "ran")); (err == nil) != tt.ran {
				t.Errorf("the check's make ran: %v, want %v", err == nil, tt.ran)
			}
			if kept := m.graph != nil && !m.noFast; kept != (tt.mismatch == nil) {
				t.Errorf("the fast path's records kept: %v, want %v", kept, tt.mismatch == nil)
			}
		})
	}
}

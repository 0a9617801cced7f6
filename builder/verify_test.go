package builder

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
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
	if mm, err := m.Verify(ctx); mm != nil || err != nil {
		t.Fatalf("Verify after a full make = %v, %v; want nothing to check", mm, err)
	}
	src := filepath.Join(dir, "printerfact.c")
	now := time.Now()
	os.Chtimes(src, now, now)
	res := build(PathFast)
	if mm, err := m.Verify(ctx); mm != nil || err != nil {
		t.Fatalf("Verify after a right fast build = %v, %v", mm, err)
	}

	flipText(t, res.KO)
	rec := filepath.Join(dir, ".printerfact.ko.cmd")
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, rec, regexp.MustCompile(`:= .*`).ReplaceAllString(string(data), ":= true"))
	mm, err := m.Verify(ctx)
	if err != nil || mm == nil || !slices.Contains(mm.Sections, ".text") || mm.KO != res.KO {
		t.Fatalf("Verify after a wrong fast build = %+v, %v; want a mismatch in .text", mm, err)
	}
	if s, err := loadSections(res.KO); err != nil || len(s[".text"]) == 0 {
		t.Fatalf("make's module is not in place: %v", err)
	}
	os.Chtimes(src, now.Add(time.Second), now.Add(time.Second))
	build(PathKbuild)
}

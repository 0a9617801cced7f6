package loop

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// debugSections lists the .debug_* sections of an ELF file.
func debugSections(t *testing.T, name string) []string {
	t.Helper()
	f, err := elf.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var debug []string
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") {
			debug = append(debug, s.Name)
		}
	}
	return debug
}

func TestStripDebug(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "m.c")
	if err := os.WriteFile(src, []byte("int answer(void) { return 42; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ko := filepath.Join(dir, "m.ko")
	if out, err := exec.Command("gcc", "-g", "-c", "-o", ko, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v: %s", err, out)
	}
	signed := filepath.Join(dir, "signed.ko")
	data, err := os.ReadFile(ko)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signed, append(data, "sig\x00\x00"+sigMagic...), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(debugSections(t, ko)) == 0 {
		t.Fatal("gcc -g wrote no .debug_* sections")
	}
	out := filepath.Join(dir, "kwatch", "upload")

	got, err := stripDebug(context.Background(), ko, out)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(out, "m.ko"); got != want {
		t.Fatalf("stripped copy at %s, want %s", got, want)
	}
	if d := debugSections(t, got); len(d) > 0 {
		t.Errorf("stripped copy still has %v", d)
	}
	before, _ := os.Stat(ko)
	after, _ := os.Stat(got)
	if after.Size() >= before.Size() {
		t.Errorf("stripped copy is %d bytes, the original %d", after.Size(), before.Size())
	}
	if len(debugSections(t, ko)) == 0 {
		t.Error("the original lost its debug sections")
	}

	// A signed module is uploaded as it is: stripping would cut off the signature.
	if got, err := stripDebug(context.Background(), signed, out); err != nil || got != signed {
		t.Errorf("signed module: stripDebug = %q, %v; want %q unchanged", got, err, signed)
	}
}

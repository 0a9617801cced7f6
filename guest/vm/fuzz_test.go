package vm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"

	"kwatch/proc"
)

// FuzzVMState reads any vm.json: an error is one line naming the file; a
// record without a live, identified process never counts as running; and
// a record read is written back the same.
func FuzzVMState(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, record []byte) {
		read, again := filepath.Join(dir, "read"), filepath.Join(dir, "again")
		for _, d := range []string{read, again} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(read, "vm.json"), record, 0o600); err != nil {
			t.Fatal(err)
		}
		st, ok, err := ReadState(read)
		if err != nil {
			if ok || strings.ContainsFunc(err.Error(), unicode.IsControl) || !strings.Contains(err.Error(), filepath.Join(read, "vm.json")) {
				t.Fatalf("error %q (ok %v): want one line naming the file", err, ok)
			}
			return
		}
		if (st.PID <= 0 || st.Process == proc.Identity{}) && Verify(st) == nil {
			t.Fatalf("the record %+v, with no live process proved, verifies", st)
		}
		if err := writeState(again, st); err != nil {
			return // a time json cannot write (a year past 9999): never one kwatch wrote
		}
		back, ok, err := ReadState(again)
		if !ok || err != nil || !back.Started.Equal(st.Started) {
			t.Fatalf("wrote %+v, read back %+v, %v, %v", st, back, ok, err)
		}
		back.Started = st.Started
		if !reflect.DeepEqual(back, st) {
			t.Fatalf("wrote %+v, read back %+v", st, back)
		}
	})
}

// FuzzELFDeps reads the interpreter and libraries of any file, as kwatch
// does with the binaries it copies into its initramfs.
func FuzzELFDeps(f *testing.F) {
	path := filepath.Join(f.TempDir(), "bin")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		interp, needed, err := readELFDeps(path)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want one line naming %s", err, path)
			}
			return
		}
		if strings.Contains(interp, "\x00") || len(interp) > len(data) {
			t.Fatalf("interpreter %q", interp)
		}
		for _, n := range needed {
			if len(n) > len(data) {
				t.Fatalf("library %q", n)
			}
		}
	})
}

package vm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestELFDeps(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		want []string // base names that must be among the dependencies
		none bool
	}{
		{bin: "/usr/sbin/dropbear", want: []string{"libtomcrypt.so.1", "libtommath.so.1", "libc.so.6", "ld-linux-x86-64.so.2"}},
		{bin: "/usr/lib/openssh/sftp-server", want: []string{"libc.so.6", "ld-linux-x86-64.so.2"}},
		{bin: "/usr/bin/busybox", none: true},
	} {
		t.Run(filepath.Base(tc.bin), func(t *testing.T) {
			deps, err := elfDeps(tc.bin)
			if err != nil {
				t.Fatal(err)
			}
			if tc.none && len(deps) > 0 {
				t.Fatalf("static %s has dependencies %v", tc.bin, deps)
			}
			got := map[string]bool{}
			for _, d := range deps {
				if !filepath.IsAbs(d) {
					t.Errorf("dependency %s is not an absolute path", d)
				}
				got[filepath.Base(d)] = true
			}
			for _, w := range tc.want {
				if !got[w] {
					t.Errorf("dependencies of %s = %v, missing %s", tc.bin, deps, w)
				}
			}
		})
	}
}

func TestELFDepsNotELF(t *testing.T) {
	if _, err := elfDeps("/etc/passwd"); err == nil {
		t.Fatal("elfDeps accepted a text file")
	}
}

// withInterpSize writes a copy of the dynamic binary src whose PT_INTERP
// claims size bytes.
func withInterpSize(t *testing.T, src string, size uint64) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	phoff, phentsize := binary.LittleEndian.Uint64(data[0x20:]), uint64(binary.LittleEndian.Uint16(data[0x36:]))
	for i, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			binary.LittleEndian.PutUint64(data[phoff+uint64(i)*phentsize+32:], size) // p_filesz of an Elf64_Phdr
		}
	}
	path := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A damaged PT_INTERP is an error, not a path; one whose size is past
// PATH_MAX is not allocated (1 TiB: the test would run out of memory).
func TestReadELFDepsDamagedInterp(t *testing.T) {
	const bin = "/bin/true"
	for _, tt := range []struct {
		size    uint64
		interp  string
		wantErr string
	}{
		{28, "/lib64/ld-linux-x86-64.so.2", ""},
		{27, "/lib64/ld-linux-x86-64.so.2", ""}, // without its NUL
		{0, "", "reading the interpreter"},
		{1 << 40, "", "more than 4096"},
	} {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			interp, _, err := readELFDeps(withInterpSize(t, bin, tt.size))
			if interp != tt.interp || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("interpreter %q, error %v; want %q, an error containing %q", interp, err, tt.interp, tt.wantErr)
			}
		})
	}
}

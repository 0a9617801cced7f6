package debuginfo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kwatch/guest/vm/vmtest"
)

// object compiles a C file with two functions in two sections that both
// start at address 0, as in a .ko, into a relocatable object.
func object(t *testing.T) (obj, src string) {
	t.Helper()
	dir := t.TempDir()
	src = filepath.Join(dir, "m.c")
	code := `int g;
__attribute__((section(".init.text"), noinline)) int m_init(int v)
{
	g = v;
	return v + 1;
}

__attribute__((noinline)) int m_run(int v)
{
	g = v * 2;
	return m_init(v) + 3;
}
`
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	obj = filepath.Join(dir, "m.o")
	if out, err := exec.Command("gcc", "-g", "-O1", "-c", "-o", obj, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return obj, src
}

func TestSource(t *testing.T) {
	obj, src := object(t)
	tests := []struct {
		function string
		ret      bool
		want     string // "" or the line
	}{
		{"m_init+0x0/0x10", false, ":4"}, // both start at address 0 of their sections
		{"m_run+0x0/0x20", false, ":10"},
		{"m_nope+0x0/0x10", false, ""},
		{"garbage", false, ""},
	}
	for _, tt := range tests {
		got := Source(context.Background(), obj, tt.function, tt.ret)
		if tt.want == "" {
			if got != "" {
				t.Errorf("%s: got %q, want nothing", tt.function, got)
			}
			continue
		}
		if got != src+tt.want {
			t.Errorf("%s: got %q, want %s%s", tt.function, got, src, tt.want)
		}
	}
}

func TestParseGuestAndAddSymbolFile(t *testing.T) {
	obj, _ := object(t)
	out := `module m live
section .text 0xffffffffc0001000
section .init.text 0xffffffffc0009000
section .bss 0xffffffffc0002000
section .not-in-the-file 0xffffffffc0003000
buildid 040000001400000003000000474e5500672c0ae4
module other coming
section .text 0xffffffffc0005000
`
	mods := ParseGuest([]byte(out))
	m := mods["m"]
	if m == nil || !m.Live || m.BuildID != "672c0ae4" || len(m.Sections) != 4 || mods["other"].Live {
		t.Fatalf("parsed %+v", mods)
	}
	cmd, err := AddSymbolFile(obj, m.Sections, m.Live)
	if err != nil {
		t.Fatal(err)
	}
	// The .init sections are freed once the module is live; a section the
	// file does not have is left out.
	if want := "add-symbol-file " + obj + " 0xffffffffc0001000 -s .bss 0xffffffffc0002000"; cmd != want {
		t.Errorf("got  %s\nwant %s", cmd, want)
	}
	cmd, _ = AddSymbolFile(obj, m.Sections, false)
	if !strings.Contains(cmd, "-s .init.text 0xffffffffc0009000") {
		t.Errorf("a module still in its init needs .init.text: %s", cmd)
	}
}

func TestHasSymbols(t *testing.T) {
	tests := []struct {
		name string
		path string
		want bool
	}{
		{"code and symbols", compile(t, "c", "int f(void) { return 1; }\n"), true},
		// Debian 6.12's headers: a vmlinux of BTF and the symbols of its ids.
		{"only BTF", compile(t, "assembler", ".section .BTF,\"a\"\nbtf_id: .skip 8\n"), false},
		{"missing", filepath.Join(t.TempDir(), "vmlinux"), false},
	}
	for _, tt := range tests {
		if got := HasSymbols(tt.path); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A vmlinux with symbols (the Rust test tree's) has them; the BTF-only one
// Debian's 6.12 headers ship has a .symtab of BTF ids and no code, which
// kwatch gdb must not load as the kernel's symbols.
func TestHasSymbolsRealKernels(t *testing.T) {
	for _, k := range vmtest.Debian() {
		vmlinux := filepath.Join(k.Build, "vmlinux")
		if _, err := os.Stat(vmlinux); err != nil {
			continue
		}
		if HasSymbols(vmlinux) {
			t.Errorf("HasSymbols(%s) = true for a vmlinux without code", vmlinux)
		}
	}
	if tree := os.Getenv("KWATCH_RUST_KERNEL"); tree != "" && !HasSymbols(filepath.Join(tree, "vmlinux")) {
		t.Errorf("HasSymbols(%s/vmlinux) = false", tree)
	}
	if HasSymbols("/usr/bin/busybox") {
		t.Error("HasSymbols(busybox) = true for a stripped binary")
	}
}

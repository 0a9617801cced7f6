package debuginfo

import (
	"errors"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// compile builds source (C, or assembly when lang is "assembler") into a
// relocatable object with gcc and the given flags; testdata/module's
// headers are at hand as "mem.h" and "core.h".
func compile(t *testing.T, lang, source string, flags ...string) string {
	t.Helper()
	obj := filepath.Join(t.TempDir(), "m.o")
	inc, err := filepath.Abs("testdata/module")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("gcc", append(append([]string{"-x", lang, "-I", inc, "-c", "-o", obj}, flags...), "-")...)
	cmd.Stdin = strings.NewReader(source)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return obj
}

func TestProbeModuleMemory(t *testing.T) {
	this := "struct module __this_module;\n"
	memModule, coreModule := "#include \"mem.h\"\n", "#include \"core.h\"\n"
	// mem.h's: mem[] after 80 bytes, aligned to 64; struct module_memory
	// is 72 bytes, base first.
	mem := ModuleMemory{Offset: 128, Stride: 72, Base: 0, Types: map[string]int{
		"MOD_TEXT": 0, "MOD_DATA": 1, "MOD_RODATA": 2, "MOD_RO_AFTER_INIT": 3, "MOD_INIT_TEXT": 4,
		"MOD_INIT_DATA": 5, "MOD_INIT_RODATA": 6, "MOD_MEM_NUM_TYPES": 7, "MOD_INVALID": -1}}
	tests := []struct {
		name   string
		source string
		flags  []string
		want   ModuleMemory
		err    error  // a sentinel
		errMsg string // or a failure saying this
	}{
		{name: "mem[] (Linux 6.4 on)", source: memModule + this, flags: []string{"-g"}, want: mem},
		{name: "DWARF 4", source: memModule + this, flags: []string{"-gdwarf-4"}, want: mem},
		{name: "core_layout (before 6.4)", source: coreModule + this, flags: []string{"-g"}, err: ErrOneAllocation},
		{name: "no debug info", source: memModule + this, err: ErrNoModuleType},
		// Rust's bindings declare struct module opaque; so does a C file that
		// only points at it.
		{name: "only declared", source: "struct module;\nextern struct module __this_module;\nvoid *p = &__this_module;\n", flags: []string{"-g"}, err: ErrNoModuleType},
		{name: "neither layout", source: "struct module { int state; };\n" + this, flags: []string{"-g"}, errMsg: "neither mem[] nor core_layout"},
		{name: "mem[] without its enum", source: memModule + this, flags: []string{"-g", "-DNO_MOD_MEM_TYPE"}, errMsg: "no enum mod_mem_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := compile(t, "c", tt.source, tt.flags...)
			got, err := ProbeModuleMemory(obj)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("got %+v, %v; want %v", got, err, tt.err)
				}
			case tt.errMsg != "":
				if err == nil || !strings.Contains(err.Error(), tt.errMsg) || !strings.Contains(err.Error(), obj) {
					t.Fatalf("got %+v, %v; want an error naming the file and saying %q", got, err, tt.errMsg)
				}
			case err != nil:
				t.Fatal(err)
			case !reflect.DeepEqual(got, tt.want):
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	if _, err := ProbeModuleMemory(filepath.Join(t.TempDir(), "missing.ko")); err == nil || errors.Is(err, ErrNoModuleType) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestModuleMemoryBaseAt(t *testing.T) {
	mm := ModuleMemory{Offset: 320, Stride: 72, Types: map[string]int{"MOD_TEXT": 0, "MOD_DATA": 1, "MOD_INVALID": -1}}
	if at, err := mm.BaseAt(0x1000, "MOD_DATA"); err != nil || at != 0x1000+320+72 {
		t.Errorf("MOD_DATA: %#x, %v", at, err)
	}
	for _, typ := range []string{"MOD_INVALID", "MOD_FUTURE"} {
		if _, err := mm.BaseAt(0x1000, typ); err == nil {
			t.Errorf("%s: no error", typ)
		}
	}
}

// Sections of every kind the kernel lays out, with sizes and alignments
// chosen so that each rule shows: file order within a part, alignment,
// the parts' page alignment in one allocation, what is left out.
const layoutAsm = `
.section .text,"ax",@progbits
.skip 100
.section .exit.text,"ax",@progbits
.balign 16
.skip 10
.section .rodata,"a",@progbits
.balign 8
.skip 40
.section .data..ro_after_init,"aw",@progbits
.skip 8
.section .data,"aw",@progbits
.skip 24
.section .gnu.linkonce.this_module,"aw",@progbits
.balign 64
.skip 1280
.section .bss,"aw",@nobits
.balign 8
.skip 16
.section .init.text,"ax",@progbits
.skip 5
.section .modinfo,"a",@progbits
.skip 30
.section .data..percpu,"aw",@progbits
.skip 8
.section .empty,"a",@progbits
`

func TestCoreLayout(t *testing.T) {
	obj := compile(t, "assembler", layoutAsm)
	tests := []struct {
		name string
		one  bool
		want map[string]Placed
	}{
		{"one allocation (core_layout)", true, map[string]Placed{
			".text": {"", 0}, ".exit.text": {"", 112},
			".rodata":                   {"", 4096},
			".data..ro_after_init":      {"", 8192},
			".data":                     {"", 12288},
			".bss":                      {"", 12312},
			".gnu.linkonce.this_module": {"", 12352},
		}},
		{"an allocation per kind (mem[])", false, map[string]Placed{
			".text": {"MOD_TEXT", 0}, ".exit.text": {"MOD_TEXT", 112},
			".rodata":                   {"MOD_RODATA", 0},
			".data..ro_after_init":      {"MOD_RO_AFTER_INIT", 0},
			".data":                     {"MOD_DATA", 0},
			".bss":                      {"MOD_DATA", 24},
			".gnu.linkonce.this_module": {"MOD_DATA", 64},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CoreLayout(obj, tt.one)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
	if _, err := CoreLayout(filepath.Join(t.TempDir(), "missing.ko"), true); err == nil {
		t.Error("a missing file: no error")
	}
}

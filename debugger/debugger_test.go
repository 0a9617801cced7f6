package debugger

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kwatch/debuginfo"
)

// fakeMemory is guest memory as a map of 8-byte-aligned words and names.
type fakeMemory map[uint64][]byte

func (m fakeMemory) ReadMemory(addr uint64, n int) ([]byte, error) {
	b, ok := m[addr]
	if !ok || len(b) < n {
		return nil, fmt.Errorf("no memory at %#x", addr)
	}
	return b[:n], nil
}

// modules builds a kernel module list at head with the named modules, each
// struct module at base+i*0x1000.
func modules(head, base uint64, names ...string) fakeMemory {
	m := fakeMemory{}
	word := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	prev := head
	for i, n := range names {
		mod := base + uint64(i)*0x1000
		m[prev] = word(mod + moduleListOffset)
		name := make([]byte, moduleNameLen)
		copy(name, n)
		m[mod+moduleNameOffset] = name
		prev = mod + moduleListOffset
	}
	m[prev] = word(head)
	return m
}

func TestFindModule(t *testing.T) {
	mem := modules(0xffffffff82000000, 0xffffffffa0002000, "kwgdb_rust", "other", "kwgdb")
	tests := []struct {
		name string
		want uint64
		err  bool
	}{
		{"kwgdb_rust", 0xffffffffa0002000, false},
		{"kwgdb", 0xffffffffa0004000, false},
		{"kwgd", 0, true}, // a prefix is another module
		{"missing", 0, true},
	}
	for _, tt := range tests {
		got, err := FindModule(mem, 0xffffffff82000000, tt.name)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%s: got %#x, %v; want %#x (error %v)", tt.name, got, err, tt.want, tt.err)
		}
	}
	if _, err := FindModule(fakeMemory{}, 0x1000, "x"); err == nil {
		t.Error("unreadable memory: no error")
	}
}

// A module in fake guest memory, its struct module laid out as each kind
// of kernel has it (debuginfo's testdata headers): SectionsFromMemory
// reads where mem[] says each kind of memory is, or places the one core
// allocation around the struct module.
func TestSectionsFromMemory(t *testing.T) {
	const head, mod = 0xffffffff82000000, 0xffffffffc0102000
	const text, rodata = 0xffffffffc0200000, 0xffffffffc0300000
	tests := []struct {
		name   string
		header string
		flags  []string
		// mem[]'s bases, by index (mem.h's MOD_TEXT, MOD_DATA, MOD_RODATA)
		bases            []uint64
		wantText, wantRO uint64 // .rodata's page
	}{
		{"mem[] (Linux 6.4 on)", "mem.h", []string{"-g"}, []uint64{text, mod, rodata}, text, rodata},
		// The core: .text's page, .rodata's, then the struct module.
		{"core_layout (before 6.4)", "core.h", []string{"-g"}, nil, mod - 0x2000, mod - 0x1000},
		// Without debug info the kernel's layout is not known: the core is
		// taken as one allocation, as on the Rust test kernel (6.1).
		{"no debug info", "core.h", nil, nil, mod - 0x2000, mod - 0x1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ko := fakeKO(t, tt.header, "int kwfake_run(int v) { return v * 2; }\nconst int kwfake_table[4] = { 1, 2, 3, 4 };\n", tt.flags...)
			mem := modules(head, mod, "kwfake")
			for i, b := range tt.bases {
				mem[mod+128+uint64(i)*72] = binary.LittleEndian.AppendUint64(nil, b)
			}
			secs, err := SectionsFromMemory(mem, head, "kwfake", ko)
			if err != nil {
				t.Fatal(err)
			}
			if secs[".text"] != tt.wantText || secs[".gnu.linkonce.this_module"] != mod || secs[".rodata"]&^0xfff != tt.wantRO {
				t.Errorf(".text at %#x, .rodata at %#x, the struct module at %#x; want %#x, in the page at %#x, %#x",
					secs[".text"], secs[".rodata"], secs[".gnu.linkonce.this_module"], tt.wantText, tt.wantRO, uint64(mod))
			}
		})
	}
	// mem[] that is not in guest memory: an error, not a guess.
	ko := fakeKO(t, "mem.h", "int f(void) { return 0; }\n", "-g")
	if secs, err := SectionsFromMemory(modules(head, mod, "kwfake"), head, "kwfake", ko); err == nil {
		t.Errorf("unreadable mem[]: placed %v", secs)
	}
}

// fakeKO compiles a module named kwfake: its struct module as
// debuginfo's testdata header defines it, then body.
func fakeKO(t *testing.T, header, body string, flags ...string) string {
	t.Helper()
	ko := filepath.Join(t.TempDir(), "kwfake.ko")
	cmd := exec.Command("gcc", append([]string{"-x", "c", "-O1", "-I", "../debuginfo/testdata/module", "-c", "-o", ko, "-"}, flags...)...)
	cmd.Stdin = strings.NewReader("#include \"" + header + "\"\n" +
		"__attribute__((section(\".gnu.linkonce.this_module\"))) struct module __this_module = { .name = \"kwfake\" };\n" + body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return ko
}

func TestPick(t *testing.T) {
	mods := []Module{{Name: "a", KO: "/nonexistent/a.ko"}, {Name: "b", KO: "/nonexistent/b.ko"}}
	tests := []struct {
		loaded map[string]*debuginfo.Loaded
		want   string
		exact  bool
	}{
		{map[string]*debuginfo.Loaded{}, "", false},
		// The guest does not give build IDs: the first loaded build.
		{map[string]*debuginfo.Loaded{"b": {Name: "b"}}, "b", true},
		// It does, and the build has none that match: taken, but not exact.
		{map[string]*debuginfo.Loaded{"a": {Name: "a", BuildID: "ff"}}, "a", false},
	}
	for _, tt := range tests {
		m, l, exact := pick(mods, tt.loaded)
		if (l == nil) != (tt.want == "") || m.Name != tt.want || exact != tt.exact {
			t.Errorf("loaded %v: got %q exact %v, want %q exact %v", tt.loaded, m.Name, exact, tt.want, tt.exact)
		}
	}
}

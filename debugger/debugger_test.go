package debugger

import (
	"encoding/binary"
	"fmt"
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

package debugger

import (
	"bytes"
	"errors"
	"testing"
)

// flatMemory is guest memory from address 0 on, counting the reads.
type flatMemory struct {
	b     []byte
	reads int
}

func (m *flatMemory) ReadMemory(addr uint64, n int) ([]byte, error) {
	m.reads++
	if addr > uint64(len(m.b)) || uint64(n) > uint64(len(m.b))-addr {
		return nil, errors.New("no memory there")
	}
	return m.b[addr : addr+uint64(n)], nil
}

// FuzzFindModule walks any guest memory as the kernel's module list: the
// walk ends, and what it finds has the name asked for.
func FuzzFindModule(f *testing.F) {
	f.Fuzz(func(t *testing.T, mem []byte, head uint64, name string) {
		m := &flatMemory{b: mem}
		mod, err := FindModule(m, head%uint64(len(mem)+1), name)
		if m.reads > 2*10000+1 {
			t.Fatalf("%d reads of guest memory", m.reads)
		}
		if err != nil {
			return
		}
		got, _ := m.ReadMemory(mod+moduleNameOffset, moduleNameLen)
		if n, _, _ := bytes.Cut(got, []byte{0}); string(n) != name {
			t.Fatalf("found %q at %#x, want %q", n, mod, name)
		}
	})
}

package debugger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"kwatch/debuginfo"
)

// Memory reads guest memory (guest.Stub does, through QEMU's gdbstub).
type Memory interface {
	ReadMemory(addr uint64, n int) ([]byte, error)
}

// struct module starts with its state (an enum, padded to 8 bytes) and its
// node in the module list, then its name: on 6.1 and 6.12 alike (their
// modules' debug info says so), and without debug info this is all the
// walk has to go on.
const (
	moduleListOffset = 8
	moduleNameOffset = 24
	moduleNameLen    = 56 // MODULE_NAME_LEN on 64-bit
)

// FindModule walks the kernel's module list, whose head (the vmlinux
// symbol `modules`) is at head, and returns the address of module name's
// struct module.
func FindModule(mem Memory, head uint64, name string) (uint64, error) {
	node := head
	for range 10000 {
		b, err := mem.ReadMemory(node, 8)
		if err != nil {
			return 0, err
		}
		if node = binary.LittleEndian.Uint64(b); node == head {
			break
		}
		mod := node - moduleListOffset
		nb, err := mem.ReadMemory(mod+moduleNameOffset, moduleNameLen)
		if err != nil {
			return 0, err
		}
		if n, _, _ := bytes.Cut(nb, []byte{0}); string(n) == name {
			return mod, nil
		}
	}
	return 0, fmt.Errorf("%s is not in the kernel's module list", name)
}

// SectionsFromMemory places ko's core sections for a kernel that does not
// list them in sysfs (no CONFIG_KALLSYMS), by the kernel's layout rules.
// How the kernel keeps a module's memory is probed in ko's debug info
// (debuginfo.ProbeModuleMemory): with struct module's mem[] (Linux 6.4 on)
// each kind of memory is an allocation of its own, whose address the
// module's struct module holds. With core_layout, or when the debug info
// does not say (the Rust test kernel has none), the core is one
// allocation, which holds the struct module itself: the
// .gnu.linkonce.this_module section, at a known distance from every other.
func SectionsFromMemory(mem Memory, head uint64, name, ko string) (map[string]uint64, error) {
	mm, err := debuginfo.ProbeModuleMemory(ko)
	one := errors.Is(err, debuginfo.ErrOneAllocation) || errors.Is(err, debuginfo.ErrNoModuleType)
	if err != nil && !one {
		return nil, err
	}
	layout, err := debuginfo.CoreLayout(ko, one)
	if err != nil {
		return nil, err
	}
	this, ok := layout[".gnu.linkonce.this_module"]
	if !ok {
		return nil, fmt.Errorf("%s has no .gnu.linkonce.this_module section: not a kernel module", ko)
	}
	mod, err := FindModule(mem, head, name)
	if err != nil {
		return nil, err
	}
	bases := map[string]uint64{} // of each allocation, by kind
	if one {
		bases[""] = mod - this.Offset
	}
	secs := map[string]uint64{}
	for s, p := range layout {
		base, ok := bases[p.Mem]
		if !ok {
			at, err := mm.BaseAt(mod, p.Mem)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ko, err)
			}
			b, err := mem.ReadMemory(at, 8)
			if err != nil {
				return nil, err
			}
			base = binary.LittleEndian.Uint64(b)
			bases[p.Mem] = base
		}
		secs[s] = base + p.Offset
	}
	return secs, nil
}

package debugger

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"kwatch/debuginfo"
)

// Memory reads guest memory (guest.Stub does, through QEMU's gdbstub).
type Memory interface {
	ReadMemory(addr uint64, n int) ([]byte, error)
}

// Linux 6.1's struct module starts with its state (an enum, padded to 8
// bytes) and its node in the module list, then its name.
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
// list them in sysfs (no CONFIG_KALLSYMS): its struct module is the
// .gnu.linkonce.this_module section, and the kernel's layout rules put
// every other section at a known distance from it.
func SectionsFromMemory(mem Memory, head uint64, name, ko string) (map[string]uint64, error) {
	layout, err := debuginfo.CoreLayout(ko)
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
	secs := map[string]uint64{}
	for s, off := range layout {
		secs[s] = mod - this + off
	}
	return secs, nil
}

package debuginfo

import (
	"debug/elf"
	"fmt"
	"strings"
)

// shfROAfterInit is the kernel's SHF_RO_AFTER_INIT section flag.
const shfROAfterInit = 0x00200000

// pageSize is x86's; modules are laid out in page-aligned parts (with
// CONFIG_STRICT_MODULE_RWX, which every x86 kernel has unless turned off).
const pageSize = 4096

// CoreLayout returns where Linux (6.1's kernel/module/main.c layout_sections)
// places each core section of ko, as offsets from the start of the
// module's core allocation: executable sections first, then read-only
// data, data read-only after init, then writable data, each part page
// aligned and each section in file order at its own alignment. The .init
// sections go elsewhere and are freed after init; they are left out, as
// are empty ones. (.data..percpu is taken as allocated elsewhere, as on SMP
// kernels.)
func CoreLayout(ko string) (map[string]uint64, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ko, err)
	}
	defer f.Close()
	flags := make([]elf.SectionFlag, len(f.Sections))
	for i, s := range f.Sections {
		flags[i] = s.Flags
		switch s.Name {
		case ".modinfo", "__versions", ".data..percpu":
			// Not kept in the module's memory (percpu has its own allocation).
			flags[i] &^= elf.SHF_ALLOC
		case ".data..ro_after_init", "__jump_table":
			flags[i] |= shfROAfterInit
		}
	}
	masks := [][2]elf.SectionFlag{
		{elf.SHF_EXECINSTR | elf.SHF_ALLOC, 0},
		{elf.SHF_ALLOC, elf.SHF_WRITE},
		{shfROAfterInit | elf.SHF_ALLOC, 0},
		{elf.SHF_WRITE | elf.SHF_ALLOC, 0},
		{elf.SHF_ALLOC, 0},
	}
	offs := map[string]uint64{}
	placed := make([]bool, len(f.Sections))
	var size uint64
	for m, mask := range masks {
		for i, s := range f.Sections {
			if flags[i]&mask[0] != mask[0] || flags[i]&mask[1] != 0 || placed[i] || strings.HasPrefix(s.Name, ".init") {
				continue
			}
			size = align(size, max(s.Addralign, 1))
			if s.Size > 0 { // an empty section still aligns what follows; the kernel does not list it
				offs[s.Name] = size
			}
			placed[i] = true
			size += s.Size
		}
		if m != 3 { // the kernel aligns after every part but the writable data
			size = align(size, pageSize)
		}
	}
	return offs, nil
}

func align(v, a uint64) uint64 { return (v + a - 1) / a * a }

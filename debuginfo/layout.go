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

// Placed is where the kernel puts one section of a module: at Offset in
// its allocation of kind Mem (enum mod_mem_type's name, such as
// "MOD_TEXT"), or in the module's one core allocation when Mem is "".
type Placed struct {
	Mem    string
	Offset uint64
}

// layoutParts are the passes of the kernel's layout_sections
// (kernel/module/main.c): which sections each takes, and which of a
// struct module's mem[] it fills (Linux 6.4 on).
var layoutParts = []struct {
	with, without elf.SectionFlag
	mem           string
}{
	{elf.SHF_EXECINSTR | elf.SHF_ALLOC, 0, "MOD_TEXT"},
	{elf.SHF_ALLOC, elf.SHF_WRITE, "MOD_RODATA"},
	{shfROAfterInit | elf.SHF_ALLOC, 0, "MOD_RO_AFTER_INIT"},
	{elf.SHF_WRITE | elf.SHF_ALLOC, 0, "MOD_DATA"},
	{elf.SHF_ALLOC, 0, "MOD_DATA"},
}

// CoreLayout returns where the kernel places each core section of ko:
// executable sections first, then read-only data, data read-only after
// init, then writable data, each section in file order at its own
// alignment. With oneAllocation (Linux before 6.4: struct module's
// core_layout) the offsets are from the start of the module's one core
// allocation, each part page aligned; otherwise (struct module's mem[])
// each kind of memory is an allocation of its own and the offsets are from
// its start. The .init sections go elsewhere and are freed after init;
// they are left out, as are empty ones. (.data..percpu is taken as
// allocated elsewhere, as on SMP kernels.)
func CoreLayout(ko string, oneAllocation bool) (map[string]Placed, error) {
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
	offs := map[string]Placed{}
	placed := make([]bool, len(f.Sections))
	size := map[string]uint64{} // each allocation's, by kind; "" the one core allocation
	for m, part := range layoutParts {
		mem := part.mem
		if oneAllocation {
			mem = ""
		}
		for i, s := range f.Sections {
			if flags[i]&part.with != part.with || flags[i]&part.without != 0 || placed[i] || strings.HasPrefix(s.Name, ".init") {
				continue
			}
			size[mem] = align(size[mem], max(s.Addralign, 1))
			if s.Size > 0 { // an empty section still aligns what follows; the kernel does not list it
				offs[s.Name] = Placed{Mem: mem, Offset: size[mem]}
			}
			placed[i] = true
			size[mem] += s.Size
		}
		if oneAllocation && m != 3 { // the kernel aligns after every part but the writable data
			size[mem] = align(size[mem], pageSize)
		}
	}
	return offs, nil
}

func align(v, a uint64) uint64 { return (v + a - 1) / a * a }

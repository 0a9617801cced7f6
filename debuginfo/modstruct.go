package debuginfo

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
)

// The answers of ProbeModuleMemory that are not failures: what the module's
// debug info says (or does not) about the kernel's struct module.
var (
	// ErrOneAllocation: struct module has core_layout, not mem[]: the kernel
	// keeps a module's core in one allocation (Linux before 6.4).
	ErrOneAllocation = errors.New("struct module has core_layout: the module's core is one allocation")
	// ErrNoModuleType: the .ko's debug info does not describe struct module
	// (a kernel built without CONFIG_DEBUG_INFO; Rust's bindings declare it
	// opaque).
	ErrNoModuleType = errors.New("the module's debug info does not describe struct module")
)

// ModuleMemory is where a struct module keeps the addresses of its memory
// allocations, one per kind (Linux 6.4's struct module_memory mem[]).
type ModuleMemory struct {
	Offset uint64         // of mem[] in struct module
	Stride uint64         // sizeof(struct module_memory)
	Base   uint64         // of base in struct module_memory
	Types  map[string]int // enum mod_mem_type: "MOD_TEXT" -> its index in mem[]
}

// BaseAt is the address of the word holding the base of mem[typ] in the
// struct module at mod.
func (m ModuleMemory) BaseAt(mod uint64, typ string) (uint64, error) {
	i, ok := m.Types[typ]
	if !ok || i < 0 {
		return 0, fmt.Errorf("enum mod_mem_type has no %s", typ)
	}
	return mod + m.Offset + uint64(i)*m.Stride + m.Base, nil
}

// ProbeModuleMemory reads struct module as the kernel ko was built for
// defines it, from ko's own debug info (the .mod.c's __this_module brings
// the whole type): its mem[] when it has one; ErrOneAllocation when it has
// the older core_layout; ErrNoModuleType when the debug info has no
// complete struct module. The layout is detected, not inferred from a
// version, so any kernel with mem[] works.
func ProbeModuleMemory(ko string) (ModuleMemory, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return ModuleMemory{}, fmt.Errorf("reading %s: %w", ko, err)
	}
	defer f.Close()
	if f.Section(".debug_info") == nil {
		return ModuleMemory{}, ErrNoModuleType
	}
	d, err := f.DWARF()
	if err != nil {
		return ModuleMemory{}, fmt.Errorf("reading the debug info of %s: %w", ko, err)
	}
	mod, types, err := findModuleTypes(d)
	if err != nil {
		return ModuleMemory{}, fmt.Errorf("reading the debug info of %s: %w", ko, err)
	}
	if mod == nil {
		return ModuleMemory{}, ErrNoModuleType
	}
	var mm ModuleMemory
	for _, fl := range mod.Field {
		switch fl.Name {
		case "core_layout":
			return ModuleMemory{}, ErrOneAllocation
		case "mem":
			arr, ok := fl.Type.(*dwarf.ArrayType)
			if !ok {
				return ModuleMemory{}, fmt.Errorf("%s: struct module's mem is a %s, not an array", ko, fl.Type)
			}
			elem, ok := arr.Type.(*dwarf.StructType)
			if !ok {
				return ModuleMemory{}, fmt.Errorf("%s: struct module's mem[] holds %s, not a struct", ko, arr.Type)
			}
			mm.Offset, mm.Stride = uint64(fl.ByteOffset), uint64(elem.Size())
			if arr.StrideBitSize > 0 {
				mm.Stride = uint64(arr.StrideBitSize / 8)
			}
			base := false
			for _, e := range elem.Field {
				if e.Name == "base" {
					mm.Base, base = uint64(e.ByteOffset), true
				}
			}
			if !base || mm.Stride == 0 {
				return ModuleMemory{}, fmt.Errorf("%s: struct %s has no base", ko, elem.StructName)
			}
		}
	}
	if mm.Stride == 0 {
		return ModuleMemory{}, fmt.Errorf("%s: struct module has neither mem[] nor core_layout: kwatch does not know this kernel's module layout", ko)
	}
	if types == nil {
		return ModuleMemory{}, fmt.Errorf("%s: the debug info has struct module's mem[] but no enum mod_mem_type to index it", ko)
	}
	mm.Types = map[string]int{}
	for _, v := range types.Val {
		mm.Types[v.Name] = int(v.Val)
	}
	return mm, nil
}

// findModuleTypes returns the first complete struct module and enum
// mod_mem_type in d, nil for those it lacks.
func findModuleTypes(d *dwarf.Data) (*dwarf.StructType, *dwarf.EnumType, error) {
	var mod *dwarf.StructType
	var types *dwarf.EnumType
	r := d.Reader()
	for mod == nil || types == nil {
		e, err := r.Next()
		if err != nil {
			return nil, nil, err
		}
		if e == nil {
			break
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch {
		case e.Tag == dwarf.TagStructType && name == "module" && mod == nil && e.Val(dwarf.AttrDeclaration) == nil:
			t, err := d.Type(e.Offset)
			if err != nil {
				return nil, nil, err
			}
			if st, ok := t.(*dwarf.StructType); ok && !st.Incomplete && len(st.Field) > 0 {
				mod = st
			}
		case e.Tag == dwarf.TagEnumerationType && name == "mod_mem_type" && types == nil:
			t, err := d.Type(e.Offset)
			if err != nil {
				return nil, nil, err
			}
			types, _ = t.(*dwarf.EnumType)
		}
		if e.Tag != dwarf.TagCompileUnit && e.Children {
			r.SkipChildren()
		}
	}
	return mod, types, nil
}

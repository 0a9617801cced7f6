// Package buildertest makes kernel module files for tests of code that reads
// them, without a compiler.
package buildertest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// ELFWith returns a minimal ELF64 relocatable object with one section.
func ELFWith(section string, data []byte) []byte {
	return ELF(Section{section, data})
}

// Section is one section of an object ELF makes.
type Section struct {
	Name string
	Data []byte
}

// ELF returns a minimal ELF64 relocatable object with these sections.
func ELF(sections ...Section) []byte {
	const ehsize, shentsize = 64, 64
	shstrtab := "\x00"
	var data []byte
	headers := []elf.Section64{{}}
	for _, sec := range sections {
		headers = append(headers, elf.Section64{Name: uint32(len(shstrtab)), Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC),
			Off: ehsize + uint64(len(data)), Size: uint64(len(sec.Data)), Addralign: 1})
		shstrtab += sec.Name + "\x00"
		data = append(data, sec.Data...)
	}
	headers = append(headers, elf.Section64{Name: uint32(len(shstrtab)), Type: uint32(elf.SHT_STRTAB),
		Off: ehsize + uint64(len(data)), Size: uint64(len(shstrtab) + len(".shstrtab") + 1), Addralign: 1})
	shstrtab += ".shstrtab\x00"
	var b bytes.Buffer
	hdr := elf.Header64{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: ehsize + uint64(len(data)+len(shstrtab)), Ehsize: ehsize, Shentsize: shentsize,
		Shnum: uint16(len(headers)), Shstrndx: uint16(len(headers) - 1)}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(data)
	b.WriteString(shstrtab)
	binary.Write(&b, binary.LittleEndian, headers)
	return b.Bytes()
}

// WriteKO writes a .ko named name.ko into dir whose .modinfo names the module
// and its vermagic, and returns its path.
func WriteKO(t testing.TB, dir, name, vermagic string) string {
	t.Helper()
	return WriteKUnitKO(t, dir, name, vermagic, 0)
}

// WriteKUnitKO is WriteKO for a module with that many KUnit suites.
func WriteKUnitKO(t testing.TB, dir, name, vermagic string, suites int) string {
	t.Helper()
	p := filepath.Join(dir, name+".ko")
	secs := []Section{{".modinfo", []byte("license=GPL\x00name=" + name + "\x00vermagic=" + vermagic + "\x00")}}
	if suites > 0 {
		secs = append(secs, Section{".kunit_test_suites", make([]byte, 8*suites)})
	}
	data := ELF(secs...)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

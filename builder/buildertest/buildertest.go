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
	shstrtab := "\x00" + section + "\x00.shstrtab\x00"
	const ehsize, shentsize = 64, 64
	dataOff := uint64(ehsize)
	strOff := dataOff + uint64(len(data))
	shOff := strOff + uint64(len(shstrtab))
	var b bytes.Buffer
	hdr := elf.Header64{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(data)
	b.WriteString(shstrtab)
	binary.Write(&b, binary.LittleEndian, []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: dataOff, Size: uint64(len(data)), Addralign: 1},
		{Name: uint32(len(section) + 2), Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstrtab)), Addralign: 1},
	})
	return b.Bytes()
}

// WriteKO writes a .ko named name.ko into dir whose .modinfo names the module
// and its vermagic, and returns its path.
func WriteKO(t testing.TB, dir, name, vermagic string) string {
	t.Helper()
	p := filepath.Join(dir, name+".ko")
	data := ELFWith(".modinfo", []byte("license=GPL\x00name="+name+"\x00vermagic="+vermagic+"\x00"))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

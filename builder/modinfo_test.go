package builder

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Modinfo
	}{
		{"printerfact-like",
			"version=1\x00description=facts\x00author=kwatch\x00license=GPL\x00parmtype=facts_limit:int\x00" +
				"parm=facts_limit:serve only the first N facts\x00srcversion=ABC\x00depends=\x00retpoline=Y\x00" +
				"name=printerfact\x00vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \x00\x00\x00",
			Modinfo{Name: "printerfact", Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", License: "GPL",
				Version: "1", Description: "facts",
				Params: []Param{{Name: "facts_limit", Type: "int", Description: "serve only the first N facts"}},
				Fields: map[string][]string{"version": {"1"}, "description": {"facts"}, "author": {"kwatch"},
					"license": {"GPL"}, "parmtype": {"facts_limit:int"}, "parm": {"facts_limit:serve only the first N facts"},
					"srcversion": {"ABC"}, "depends": {""}, "retpoline": {"Y"}, "name": {"printerfact"},
					"vermagic": {"6.1.0-56-amd64 SMP preempt mod_unload modversions "}}}},
		{"depends, params in first-seen order, repeated keys",
			"parm=b:the b\x00parmtype=a:charp\x00parmtype=b:uint\x00author=x\x00author=y\x00depends=usbcore,hid\x00",
			Modinfo{Depends: []string{"usbcore", "hid"},
				Params: []Param{{Name: "b", Type: "uint", Description: "the b"}, {Name: "a", Type: "charp"}},
				Fields: map[string][]string{"parm": {"b:the b"}, "parmtype": {"a:charp", "b:uint"},
					"author": {"x", "y"}, "depends": {"usbcore,hid"}}}},
		{"empty", "", Modinfo{Fields: map[string][]string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseModinfo([]byte(tt.raw)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// elfWith returns a minimal ELF64 relocatable object with one section.
func elfWith(section string, data []byte) []byte {
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

func xzBytes(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdBytes(t *testing.T, data []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(data, nil)
}

func gzipBytes(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadModinfoFile(t *testing.T) {
	modinfo := []byte("license=GPL\x00name=hello\x00vermagic=6.1.0 mod_unload \x00")
	ko := elfWith(".modinfo", modinfo)
	tests := []struct {
		file     string
		data     []byte
		wantName string
		wantErr  string
	}{
		{"hello.ko", ko, "hello", ""},
		{"hello.ko.xz", xzBytes(t, ko), "hello", ""},
		// Before Linux 5.3 there is no name= entry: the file name says it.
		{"old-style.ko.xz", xzBytes(t, elfWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"nomodinfo.ko", elfWith(".text", []byte{0xc3}), "", "no .modinfo section"},
		{"text.ko", []byte("obj-m := hello.o\n"), "", "not a kernel module"},
		{"hello.ko.zst", zstdBytes(t, ko), "hello", ""},
		{"old-style.ko.zst", zstdBytes(t, elfWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"hello.ko.gz", gzipBytes(t, ko), "hello", ""},
		{"old-style.ko.gz", gzipBytes(t, elfWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"broken.ko.xz", xzMagic, "", "decompressing"},
		{"broken.ko.zst", append(zstdMagic, 1, 2, 3), "", "decompressing"},
		{"broken.ko.gz", append(gzipMagic, 8, 0, 0), "", "decompressing"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			info, err := ReadModinfo(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want one naming %s and containing %q", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Name != tt.wantName || info.License != "GPL" {
				t.Errorf("got name %q license %q, want %q GPL", info.Name, info.License, tt.wantName)
			}
		})
	}
	if _, err := ReadModinfo(filepath.Join(dir, "missing.ko")); err == nil {
		t.Error("ReadModinfo of a missing file: no error")
	}
}

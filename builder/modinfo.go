package builder

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Modinfo is what the .modinfo ELF section of a .ko says.
type Modinfo struct {
	Name, Vermagic, License, Version, Description string
	Depends                                       []string
	Params                                        []Param             // from parm= and parmtype= entries, in order
	Fields                                        map[string][]string // every key=value, for anything not above
}

// Param is a module parameter.
type Param struct{ Name, Type, Description string }

var (
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// ModuleSuffixes are the file name endings of a kernel module: plain (first),
// or compressed the ways the kernel's modules_install can compress it.
var ModuleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// ModuleBase is a module file's name without its directory and its
// .ko, .ko.xz, .ko.zst or .ko.gz.
func ModuleBase(path string) string {
	base := filepath.Base(path)
	for _, suf := range ModuleSuffixes {
		if b, ok := strings.CutSuffix(base, suf); ok && b != "" {
			return b
		}
	}
	return base
}

// ReadModule returns the contents of a .ko, decompressing a .ko.xz, .ko.zst
// or .ko.gz (told apart by their magic numbers, not their names).
func ReadModule(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading module: %w", err)
	}
	var r io.Reader
	switch {
	case bytes.HasPrefix(data, xzMagic):
		r, err = xz.NewReader(bytes.NewReader(data))
	case bytes.HasPrefix(data, zstdMagic):
		var d *zstd.Decoder
		if d, err = zstd.NewReader(bytes.NewReader(data)); err == nil {
			defer d.Close()
			r = d
		}
	case bytes.HasPrefix(data, gzipMagic):
		r, err = gzip.NewReader(bytes.NewReader(data))
	default:
		return data, nil
	}
	if err == nil {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", path, err)
	}
	return data, nil
}

// ReadModinfo reads the .modinfo section of a module, compressed or not.
func ReadModinfo(path string) (Modinfo, error) {
	data, err := ReadModule(path)
	if err != nil {
		return Modinfo{}, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return Modinfo{}, fmt.Errorf("reading %s: not a kernel module: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return Modinfo{}, fmt.Errorf("reading %s: not a kernel module: it has no .modinfo section", path)
	}
	raw, err := sec.Data()
	if err != nil {
		return Modinfo{}, fmt.Errorf("reading .modinfo of %s: %w", path, err)
	}
	info := parseModinfo(raw)
	if info.Name == "" {
		// Kernels before 5.3 do not record the name; insmod goes by the file name.
		info.Name = strings.ReplaceAll(ModuleBase(path), "-", "_")
	}
	return info, nil
}

// parseModinfo parses the NUL-separated key=value strings of a .modinfo section.
func parseModinfo(raw []byte) Modinfo {
	info := Modinfo{Fields: map[string][]string{}}
	params := map[string]int{} // name -> index in info.Params
	param := func(entry string) (*Param, string) {
		name, rest, _ := strings.Cut(entry, ":")
		i, ok := params[name]
		if !ok {
			i = len(info.Params)
			params[name] = i
			info.Params = append(info.Params, Param{Name: name})
		}
		return &info.Params[i], rest
	}
	for _, kv := range strings.Split(string(raw), "\x00") {
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		info.Fields[key] = append(info.Fields[key], val)
		switch key {
		case "name":
			info.Name = val
		case "vermagic":
			info.Vermagic = val
		case "license":
			info.License = val
		case "version":
			info.Version = val
		case "description":
			info.Description = val
		case "depends":
			for _, d := range strings.Split(val, ",") {
				if d != "" {
					info.Depends = append(info.Depends, d)
				}
			}
		case "parm":
			p, desc := param(val)
			p.Description = desc
		case "parmtype":
			p, typ := param(val)
			p.Type = typ
		}
	}
	return info
}

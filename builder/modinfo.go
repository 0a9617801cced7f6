package builder

import (
	"bytes"
	"debug/elf"
	"fmt"
	"strings"

	"kwatch/kmod"
)

// Modinfo is what the .modinfo ELF section of a .ko says, and how many KUnit
// suites the module has.
type Modinfo struct {
	Name, Vermagic, License, Version, Description string
	Depends                                       []string
	Params                                        []Param             // from parm= and parmtype= entries, in order
	Fields                                        map[string][]string // every key=value, for anything not above

	// KUnitSuites counts the pointers in the .kunit_test_suites section: a
	// kernel with CONFIG_KUNIT runs these suites inside the module's insmod.
	KUnitSuites int
}

// Param is a module parameter.
type Param struct{ Name, Type, Description string }

// ReadModinfo reads the .modinfo section of a module, compressed or not.
func ReadModinfo(path string) (Modinfo, error) {
	data, err := kmod.Read(path)
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
	if s := f.Section(".kunit_test_suites"); s != nil {
		ptr := uint64(8)
		if f.Class == elf.ELFCLASS32 {
			ptr = 4
		}
		info.KUnitSuites = int(s.Size / ptr)
	}
	if info.Name == "" {
		// Kernels before 5.3 do not record the name; insmod goes by the file name.
		info.Name = kmod.Name(path)
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

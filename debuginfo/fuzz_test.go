package debuginfo

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// FuzzModule reads any .ko with what the guest says about any module, as
// kwatch gdb and the crash reports do: the gdb command is one line, and
// every section named is one the .ko has.
func FuzzModule(f *testing.F) {
	ko := filepath.Join(f.TempDir(), "m.ko")
	f.Fuzz(func(t *testing.T, data, guest []byte, function string) {
		if err := os.WriteFile(ko, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var names map[string]bool
		if e, err := elf.Open(ko); err == nil {
			names = map[string]bool{}
			for _, s := range e.Sections {
				names[s.Name] = true
			}
			e.Close()
		}
		for name, m := range ParseGuest(guest) {
			if name != m.Name || strings.ContainsFunc(name, unicode.IsSpace) || !strings.Contains(string(guest), "module "+name) {
				t.Fatalf("module %q, named %q: not a word of the guest's output", name, m.Name)
			}
			if _, err := hex.DecodeString(m.BuildID); err != nil {
				t.Fatalf("build ID %q is not hex", m.BuildID)
			}
			cmd, err := AddSymbolFile(ko, m.Sections, m.Live)
			if err != nil {
				continue
			}
			if strings.ContainsFunc(cmd, unicode.IsControl) || !strings.HasPrefix(cmd, "add-symbol-file "+ko+" 0x") {
				t.Fatalf("gdb command %q: want one add-symbol-file line", cmd)
			}
			for _, field := range strings.Fields(cmd) {
				if strings.HasPrefix(field, ".") && !names[field] {
					t.Fatalf("gdb command %q names %s, which the .ko does not have", cmd, field)
				}
			}
		}
		for _, one := range []bool{true, false} {
			if layout, err := CoreLayout(ko, one); err == nil {
				for name, p := range layout {
					if !names[name] || (p.Mem == "") != one {
						t.Fatalf("layout (one allocation %v) places %q in %q, which the .ko does not have", one, name, p.Mem)
					}
				}
			} else if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), ko) {
				t.Fatalf("error %q: want one line naming %s", err, ko)
			}
		}
		if mm, err := ProbeModuleMemory(ko); err == nil {
			if mm.Stride == 0 || mm.Types == nil {
				t.Fatalf("probed %+v: no mem[] to read", mm)
			}
		} else if !errors.Is(err, ErrOneAllocation) && !errors.Is(err, ErrNoModuleType) && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), ko)) {
			t.Fatalf("error %q: want one line naming %s", err, ko)
		}
		if id, err := BuildID(ko); err == nil {
			if _, err := hex.DecodeString(id); err != nil {
				t.Fatalf("build ID %q is not hex", id)
			}
		}
		if section, _, ok := sectionAddr(ko, function, true); ok && !names[section] {
			t.Fatalf("%s is in section %q, which the .ko does not have", function, section)
		}
		SymbolValue(ko, "init_module")
		HasSymbols(ko)
	})
}

package kmod

import (
	"bytes"
	"debug/elf"
	"strings"
)

// SymbolFrom returns a symbol that the module ko (its ELF bytes) leaves
// undefined and that Module.symvers (its contents) says module exports: why
// ko needs module. "" when none is found.
func SymbolFrom(ko, symvers []byte, module string) string {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return ""
	}
	syms, err := f.Symbols()
	if err != nil {
		return ""
	}
	undefined := map[string]bool{}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF && s.Name != "" {
			undefined[s.Name] = true
		}
	}
	want := Name(module)
	for line := range strings.SplitSeq(string(symvers), "\n") {
		// CRC, symbol, module path (vmlinux for the kernel itself), export type[, namespace]
		f := strings.Split(line, "\t")
		if len(f) >= 3 && undefined[f[1]] && Name(f[2]) == want {
			return f[1]
		}
	}
	return ""
}

// Package debuginfo places a kernel module's symbols where the guest loaded
// it: gdb's add-symbol-file command from the section addresses the guest
// reports, and source lines for the function+offset a crash report names.
package debuginfo

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Loaded is what the guest says about one loaded module.
type Loaded struct {
	Name     string
	Live     bool              // its init has finished: the .init sections are freed
	Sections map[string]uint64 // from /sys/module/NAME/sections (CONFIG_KALLSYMS)
	BuildID  string            // hex, from /sys/module/NAME/notes; "" when the kernel does not say
}

// GuestScript is the guest shell script whose output ParseGuest reads: one
// round trip for every candidate module. Names are module names, which the
// kernel limits to [A-Za-z0-9_-].
func GuestScript(names []string) string {
	return `for m in ` + strings.Join(names, " ") + `; do d=/sys/module/$m; [ -f $d/initstate ] || continue
echo "module $m $(cat $d/initstate)"
for f in $d/sections/.* $d/sections/*; do [ -f "$f" ] && echo "section ${f##*/} $(cat "$f")"; done
[ -f $d/notes/.note.gnu.build-id ] && echo "buildid $(od -An -tx1 -v $d/notes/.note.gnu.build-id | tr -d ' \n')"
done; true`
}

// ParseGuest reads GuestScript's output.
func ParseGuest(out []byte) map[string]*Loaded {
	mods := map[string]*Loaded{}
	var cur *Loaded
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "module":
			cur = &Loaded{Name: f[1], Live: f[2] == "live", Sections: map[string]uint64{}}
			mods[cur.Name] = cur
		case cur == nil:
		case len(f) == 3 && f[0] == "section":
			if a, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64); err == nil {
				cur.Sections[f[1]] = a
			}
		case len(f) == 2 && f[0] == "buildid":
			cur.BuildID = noteBuildID(f[1])
		}
	}
	return mods
}

// noteBuildID takes the build ID out of an ELF note in hex: namesz, descsz
// and type (4 bytes each), the name "GNU\0", then the ID.
func noteBuildID(note string) string {
	b, err := hex.DecodeString(note)
	if err != nil || len(b) < 16 {
		return ""
	}
	return hex.EncodeToString(b[16:])
}

// BuildID reads the GNU build ID of a .ko, "" when it has none.
func BuildID(ko string) (string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", ko, err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		return "", nil
	}
	b, err := s.Data()
	if err != nil {
		return "", fmt.Errorf("reading the build ID of %s: %w", ko, err)
	}
	return noteBuildID(hex.EncodeToString(b)), nil
}

// AddSymbolFile is gdb's command that loads ko's symbols at the addresses in
// secs, for the sections ko has. The .init sections are left out once the
// module is live: the kernel freed them.
func AddSymbolFile(ko string, secs map[string]uint64, live bool) (string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", ko, err)
	}
	defer f.Close()
	var names []string
	for _, s := range f.Sections {
		if _, ok := secs[s.Name]; ok && s.Flags&elf.SHF_ALLOC != 0 && !(live && strings.HasPrefix(s.Name, ".init")) {
			names = append(names, s.Name)
		}
	}
	text, ok := secs[".text"]
	if !ok || len(names) == 0 {
		return "", fmt.Errorf("the guest reports no .text address for %s", ko)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "add-symbol-file %s 0x%x", gdbQuote(ko), text)
	for _, n := range names {
		if n != ".text" {
			fmt.Fprintf(&b, " -s %s 0x%x", n, secs[n])
		}
	}
	return b.String(), nil
}

// gdbQuote quotes a file name for gdb's command line when it needs it.
func gdbQuote(s string) string {
	if !strings.ContainsAny(s, " \t'\"\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// SymbolValue returns the value of symbol name in the ELF file path.
func SymbolValue(path, name string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return 0, fmt.Errorf("reading the symbols of %s: %w", path, err)
	}
	for _, s := range syms {
		if s.Name == name {
			return s.Value, nil
		}
	}
	return 0, fmt.Errorf("%s has no symbol %s", path, name)
}

// HasSymbols reports whether the ELF file path has a symbol table for its
// code. A BTF-only vmlinux (Debian 6.12's headers ship one for Kbuild's
// pahole) has a .symtab too, of BTF ids only, and no .text.
func HasSymbols(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	text := f.Section(".text")
	return f.Section(".symtab") != nil && text != nil && text.Type == elf.SHT_PROGBITS
}

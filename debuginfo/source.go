package debuginfo

import (
	"context"
	"debug/elf"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Source resolves a function+offset of a crash report ("kwfault_init+0x15/0x30")
// to "file.c:LINE" from the debug info of the unstripped module ko, through
// binutils' addr2line: it reads a relocatable object's DWARF section by
// section (-j), which Go's debug/dwarf cannot, as every section of a .ko
// starts at address 0. A return address (a call trace frame) points after
// its call, so one byte is taken off to land on the call's line. "" when
// the location is unknown.
func Source(ctx context.Context, ko, function string, returnAddr bool) string {
	section, addr, ok := sectionAddr(ko, function, returnAddr)
	if !ok {
		return ""
	}
	return addr2line(ctx, ko, section, addr)
}

// sectionAddr finds function+offset in ko: the section of the function's
// symbol and the address in it.
func sectionAddr(ko, function string, returnAddr bool) (section string, addr uint64, ok bool) {
	name, off, ok := splitFunction(function)
	if !ok {
		return "", 0, false
	}
	f, err := elf.Open(ko)
	if err != nil {
		return "", 0, false
	}
	defer f.Close()
	syms, _ := f.Symbols()
	for _, s := range syms {
		if s.Name != name || elf.ST_TYPE(s.Info) != elf.STT_FUNC || int(s.Section) >= len(f.Sections) || s.Section == elf.SHN_UNDEF {
			continue
		}
		addr := s.Value + off
		if returnAddr && addr > 0 {
			addr--
		}
		return f.Sections[s.Section].Name, addr, true
	}
	return "", 0, false
}

// splitFunction splits "name+0xOFF/0xSIZE" into name and offset.
func splitFunction(fn string) (string, uint64, bool) {
	name, rest, ok := strings.Cut(fn, "+")
	if !ok || name == "" {
		return "", 0, false
	}
	offStr, _, _ := strings.Cut(rest, "/")
	off, err := strconv.ParseUint(strings.TrimPrefix(offStr, "0x"), 16, 64)
	return name, off, err == nil
}

func addr2line(ctx context.Context, ko, section string, addr uint64) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "addr2line", "-e", ko, "-j", section, fmt.Sprintf("0x%x", addr)).Output()
	if err != nil {
		return ""
	}
	loc := strings.TrimSpace(string(out))
	// "??:0" or "??:?" when there is no line information; "file.c:12 (discriminator 1)" may carry a suffix.
	loc, _, _ = strings.Cut(loc, " ")
	file, line, ok := strings.Cut(loc, ":")
	if !ok || file == "??" || line == "0" || line == "?" {
		return ""
	}
	return filepath.Clean(file) + ":" + line
}

package vm

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// libDirs is where shared libraries are looked up on the host, in the order
// the Debian dynamic linker searches them.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib"}

// elfDeps returns the ELF interpreter and every shared library bin needs,
// transitively, as host paths. The guest keeps the same paths, so the
// interpreter and its default search path find them there. A static binary
// has none.
func elfDeps(bin string) ([]string, error) {
	var deps []string
	seen := map[string]bool{}
	queue := []string{bin}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		interp, needed, err := readELFDeps(path)
		if err != nil {
			return nil, err
		}
		if interp != "" && !seen[interp] {
			seen[interp] = true
			deps = append(deps, interp)
		}
		for _, name := range needed {
			lib, err := findLib(name)
			if err != nil {
				return nil, fmt.Errorf("resolving the libraries of %s: %w", path, err)
			}
			if !seen[lib] {
				seen[lib] = true
				deps = append(deps, lib)
				queue = append(queue, lib)
			}
		}
	}
	return deps, nil
}

// maxInterp is PATH_MAX, the longest PT_INTERP a kernel execs.
const maxInterp = 4096

// readELFDeps reads PT_INTERP and the DT_NEEDED entries of one ELF file.
func readELFDeps(path string) (interp string, needed []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("reading ELF file %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		// A path, NUL-terminated: a size past PATH_MAX is a damaged file,
		// not something to allocate.
		if p.Filesz > maxInterp {
			return "", nil, fmt.Errorf("reading the interpreter of %s: its path is %d bytes long, more than %d", path, p.Filesz, maxInterp)
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", nil, fmt.Errorf("reading the interpreter of %s: %w", path, err)
		}
		interp, _, _ = strings.Cut(string(b), "\x00")
	}
	needed, err = f.DynString(elf.DT_NEEDED)
	if err != nil {
		return "", nil, fmt.Errorf("reading the needed libraries of %s: %w", path, err)
	}
	return interp, needed, nil
}

func findLib(name string) (string, error) {
	for _, dir := range libDirs {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s not found in %v", name, libDirs)
}

package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The indexes of a modules directory that dependency resolution reads.
const (
	DepFile     = "modules.dep"
	BuiltinFile = "modules.builtin"
	SoftdepFile = "modules.softdep"
)

// ErrMissing is the sentinel of a MissingError.
var ErrMissing = errors.New("module not found")

// MissingError is a dependency that is neither a module of the kernel's
// modules directory nor built into the kernel.
type MissingError struct {
	Name   string // the module that is missing
	Needer string // the module that needs it; "" for the module being loaded
}

func (e *MissingError) Error() string {
	if e.Needer == "" {
		return fmt.Sprintf("module %s is not among the kernel's modules", e.Name)
	}
	return fmt.Sprintf("module %s, which %s needs, is not among the kernel's modules", e.Name, e.Needer)
}

func (e *MissingError) Is(target error) bool { return target == ErrMissing }

// Index is what a modules directory says about its modules, by module name.
type Index struct {
	deps    map[string][]string // module -> the modules it needs, as modules.dep orders them (the last is loaded first)
	path    map[string]string   // module -> its file, relative to the modules directory
	builtin map[string]bool
	softPre map[string][]string // module -> its softdep pre: names (module names or aliases)
}

// ParseIndex reads the contents of modules.dep, modules.builtin and
// modules.softdep (either of the last two may be empty: old kernels lack them).
func ParseIndex(dep, builtin, softdep []byte) *Index {
	x := &Index{deps: map[string][]string{}, path: map[string]string{}, builtin: map[string]bool{}, softPre: map[string][]string{}}
	lines(dep, func(line string) {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return
		}
		names := []string{}
		for _, d := range strings.Fields(deps) {
			names = append(names, Name(d))
		}
		mod = strings.TrimSpace(mod)
		x.deps[Name(mod)] = names
		x.path[Name(mod)] = mod
	})
	lines(builtin, func(line string) { x.builtin[Name(strings.TrimSpace(line))] = true })
	lines(softdep, func(line string) {
		// softdep MODULE pre: A B post: C   (modprobe.d(5))
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return
		}
		mod := Name(f[1])
		x.softPre[mod] = append(x.softPre[mod], SoftPre(strings.Join(f[2:], " "))...)
	})
	return x
}

// ReadIndex reads the indexes of a modules directory on this machine.
func ReadIndex(dir string) (*Index, error) {
	var data [3][]byte
	for i, name := range []string{DepFile, BuiltinFile, SoftdepFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && (i == 0 || !errors.Is(err, fs.ErrNotExist)) {
			return nil, fmt.Errorf("reading the module list of %s (run depmod, or pass the right --modules-dir): %w", dir, err)
		}
		data[i] = b
	}
	return ParseIndex(data[0], data[1], data[2]), nil
}

// SoftPre returns the pre: names of a softdep value ("pre: a b post: c", as
// in modprobe.d and a module's softdep= modinfo entry). Names before any
// pre: or post: count for neither, as kmod reads them.
func SoftPre(softdep string) []string {
	var pre []string
	in := false
	for _, w := range strings.Fields(softdep) {
		switch w {
		case "pre:":
			in = true
		case "post:":
			in = false
		default:
			if in {
				pre = append(pre, w)
			}
		}
	}
	return pre
}

func lines(data []byte, fn func(string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
}

// Has reports whether name is a module of the directory or built in.
func (x *Index) Has(name string) bool {
	n := Name(name)
	_, ok := x.deps[n]
	return ok || x.builtin[n]
}

// Builtin reports whether name is built into the kernel.
func (x *Index) Builtin(name string) bool { return x.builtin[Name(name)] }

// Plan is what must be loaded before a module.
type Plan struct {
	// Soft lists softdep pre: names (module names or aliases such as
	// crypto-crc32c), to load first; like modprobe, kwatch does not fail
	// when one cannot be loaded, and leaves what they need to modprobe.
	Soft []string
	// Load lists module names in load order, each after everything it
	// needs; modules built into the kernel or already loaded are left out.
	Load []string
}

// Resolve works out what must be loaded before a module whose .modinfo says
// depends (its hard dependencies) and softPre (its softdep pre: names), as
// modprobe would: each module after the modules it needs and its own
// softdep pre: modules. A module in loaded (by kernel name) is satisfied as
// it is. A hard dependency that is neither a module, built in nor loaded is
// a *MissingError.
func (x *Index) Resolve(depends, softPre []string, loaded map[string]bool) (Plan, error) {
	var p Plan
	seen := map[string]bool{}
	soft := func(name string) {
		if n := Name(name); !seen[n] && !x.builtin[n] && !loaded[n] && !slices.Contains(p.Soft, name) {
			p.Soft = append(p.Soft, name)
		}
	}
	var visit func(name, needer string) error
	visit = func(name, needer string) error {
		n := Name(name)
		if seen[n] || x.builtin[n] || loaded[n] {
			return nil
		}
		deps, ok := x.deps[n]
		if !ok {
			return &MissingError{Name: n, Needer: needer}
		}
		seen[n] = true
		for _, s := range x.softPre[n] {
			soft(s)
		}
		for i := len(deps) - 1; i >= 0; i-- { // modules.dep lists the one to load first last
			if err := visit(deps[i], n); err != nil {
				return err
			}
		}
		p.Load = append(p.Load, n)
		return nil
	}
	for _, s := range softPre {
		soft(s)
	}
	for _, d := range depends {
		if d == "" {
			continue
		}
		if err := visit(d, ""); err != nil {
			return Plan{}, err
		}
	}
	return p, nil
}

// Path returns a module's path relative to the modules directory as
// modules.dep names it ("kernel/drivers/media/mc/mc.ko.xz"), or "".
func (x *Index) Path(name string) string { return x.path[Name(name)] }

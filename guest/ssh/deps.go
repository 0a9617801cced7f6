package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"kwatch/kmod"

	"github.com/pkg/sftp"
)

// moduleDirs are where a guest keeps its kernel's modules, the first that
// has a modules.dep wins: the usual place (the --vm qemu guest mounts the
// host's there), and NixOS's, whose kmod is built to look there.
var moduleDirs = []string{"/lib/modules/%s", "/run/booted-system/kernel-modules/lib/modules/%s"}

// ErrNoModulesDir means the guest has no modules directory for its kernel.
var ErrNoModulesDir = errors.New("the guest has no modules directory for its kernel")

// DepsError is a dependency that cannot be loaded.
type DepsError struct {
	Module string // the dependency
	Dir    string // the modules directory kwatch looked in, in the guest
	Err    error  // a *kmod.MissingError, or why modprobe failed
}

func (e *DepsError) Error() string {
	var me *kmod.MissingError
	if errors.As(e.Err, &me) {
		where := fmt.Sprintf("looked in %s/%s and %s in the guest", e.Dir, kmod.DepFile, kmod.BuiltinFile)
		if me.Needer != "" {
			return fmt.Sprintf("%s, which %s needs, is not a module of the guest's kernel (%s)", me.Name, me.Needer, where)
		}
		return fmt.Sprintf("%s is not a module of the guest's kernel (%s)", me.Name, where)
	}
	return fmt.Sprintf("loading %s in the guest: %v", e.Module, e.Err)
}

func (e *DepsError) Unwrap() error { return e.Err }

// LoadDeps makes sure that what a module needs is loaded in the guest, which
// runs kernel release: its hard dependencies (depends, from .modinfo) and
// softdep pre: modules (softPre), with everything they need in turn. They
// are resolved from the guest's own modules directory, read over SFTP, and
// loaded in order with the guest's modprobe; a module already loaded is left
// alone. It returns the modules it loaded.
func (c *Client) LoadDeps(ctx context.Context, release string, depends, softPre []string) (loaded []string, err error) {
	sc, done, err := c.sftp(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { done(err) }()
	// What is loaded already (by hand, or by an earlier run) is satisfied
	// as it is: with everything there, no index is read.
	have := map[string]bool{}
	if entries, err := sc.ReadDir("/sys/module"); err == nil {
		for _, e := range entries {
			have[e.Name()] = true
		}
	}
	missing := false
	for _, m := range append(slices.Clone(depends), softPre...) {
		missing = missing || (m != "" && !have[kmod.Name(m)])
	}
	if !missing {
		return nil, nil
	}
	dir, x, err := moduleIndex(sc, release)
	if err != nil {
		return nil, err
	}
	plan, err := x.Resolve(depends, softPre, have)
	if err != nil {
		de := &DepsError{Dir: dir, Err: err}
		var me *kmod.MissingError
		if errors.As(err, &me) {
			de.Module = me.Name
		}
		return nil, de
	}
	if len(plan.Load) == 0 && len(plan.Soft) == 0 {
		return nil, nil
	}
	// One script: each module not yet in sysfs is modprobed and named; the
	// first that fails ends it with modprobe's words. A softdep is optional,
	// as for modprobe itself.
	var script strings.Builder
	for _, s := range plan.Soft {
		fmt.Fprintf(&script, "modprobe -q -- %s 2>/dev/null || :\n", Quote(s))
	}
	for _, m := range plan.Load {
		q := Quote(m)
		fmt.Fprintf(&script, "[ -e /sys/module/%s ] || { modprobe -- %s || { echo %s%s; exit 1; }; echo %s%s; }\n",
			q, q, failedMark, q, loadedMark, q)
	}
	out, exit, err := c.script(ctx, script.String())
	if err != nil {
		return nil, fmt.Errorf("loading the module's dependencies: %w", err)
	}
	var msg []string
	failed := ""
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		switch {
		case strings.HasPrefix(line, loadedMark):
			loaded = append(loaded, strings.TrimPrefix(line, loadedMark))
		case strings.HasPrefix(line, failedMark):
			failed = strings.TrimPrefix(line, failedMark)
		case line != "":
			msg = append(msg, line)
		}
	}
	if exit != 0 {
		if failed == "" {
			failed = strings.Join(plan.Load, ", ")
		}
		why := strings.Join(msg, "; ")
		if why == "" {
			why = fmt.Sprintf("modprobe: exit status %d", exit)
		}
		return loaded, &DepsError{Module: failed, Dir: dir, Err: errors.New(why)}
	}
	return loaded, nil
}

const (
	loadedMark = "kwatch-loaded "
	failedMark = "kwatch-failed "
)

// moduleIndex reads the indexes of the guest's modules directory.
func moduleIndex(sc *sftp.Client, release string) (dir string, x *kmod.Index, err error) {
	read := func(name string, optional bool) ([]byte, error) {
		f, err := sc.Open(path.Join(dir, name))
		if err != nil {
			if optional && errors.Is(err, fs.ErrNotExist) {
				return nil, nil // old kernels have no modules.builtin or modules.softdep
			}
			return nil, err
		}
		defer f.Close()
		var b bytes.Buffer
		_, err = f.WriteTo(&b) // concurrent reads: modules.dep is 600 KB on 6.12
		return b.Bytes(), err
	}
	var tried []string
	for _, d := range moduleDirs {
		dir = fmt.Sprintf(d, release)
		dep, err := read(kmod.DepFile, false)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, dir)
			continue
		}
		builtin, err2 := read(kmod.BuiltinFile, true)
		softdep, err3 := read(kmod.SoftdepFile, true)
		if err := errors.Join(err, err2, err3); err != nil {
			return "", nil, fmt.Errorf("reading the modules directory %s in the guest: %w", dir, err)
		}
		return dir, kmod.ParseIndex(dep, builtin, softdep), nil
	}
	return "", nil, fmt.Errorf("%w (looked for %s in %s; for --vm qemu the host's modules dir is shared over 9p: see the console log)",
		ErrNoModulesDir, kmod.DepFile, strings.Join(tried, " and "))
}

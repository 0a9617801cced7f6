package builder

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"kwatch/buildfiles"
	"kwatch/proc"
)

// Make runs `make Args...` in Dir with Env (nil = os.Environ()) and returns the
// module named by Dir/modules.order. It is the core of the Kbuild builder and of
// nix's incremental builder, so it knows nothing about either.
type Make struct {
	Dir  string
	Args []string
	Env  []string
}

// ErrSourcesChanged means a source file changed while make ran; what the
// build wrote was removed, and the sources should be built again.
var ErrSourcesChanged = errors.New("sources changed during the build")

// stamp is what tells a file's content changed without reading it.
type stamp struct {
	mtime time.Time
	size  int64
}

// sourceStamps stamps every build input under dir (outside dot-directories).
func sourceStamps(dir string) map[string]stamp {
	stamps := map[string]stamp{}
	walkFiles(dir, func(path string, fi fs.FileInfo) {
		if buildfiles.IsInput(filepath.Base(path)) {
			stamps[path] = stamp{fi.ModTime(), fi.Size()}
		}
	})
	return stamps
}

// removeOutputsSince removes the objects and modules under dir written at or
// after t (one written just before costs only a recompile).
func removeOutputsSince(dir string, t time.Time) error {
	var errs []error
	walkFiles(dir, func(path string, fi fs.FileInfo) {
		if ext := filepath.Ext(path); (ext == ".o" || ext == ".ko") && !fi.ModTime().Before(t) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// walkFiles calls fn for each regular file under dir, skipping dot-directories.
func walkFiles(dir string, fn func(path string, fi fs.FileInfo)) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if path != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			fn(path, fi)
		}
		return nil
	})
}

// withoutMakeVars drops the variables an outer make (`make demo`, `make
// test`) passes down: its jobserver and level would leak into the module
// build and change how make behaves and words its errors.
func withoutMakeVars(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name != "MAKEFLAGS" && name != "MAKELEVEL" && name != "MFLAGS" {
			out = append(out, kv)
		}
	}
	return out
}

// Build runs make once, in place: Kbuild's own dependency tracking makes it incremental.
func (m *Make) Build(ctx context.Context, out io.Writer) (Result, error) {
	dir, err := filepath.Abs(m.Dir)
	if err != nil {
		return Result{}, fmt.Errorf("resolving build dir %s: %w", m.Dir, err)
	}
	if out == nil {
		out = io.Discard
	}
	s := newScanner(dir, out, argValue(m.Args, "RUSTC=", "rustc"), argValue(m.Args, "-C", "the kernel build dir"))
	cmd := exec.Command("make", m.Args...)
	cmd.Dir = dir
	cmd.Env = withoutMakeVars(m.Env)
	// One writer for both streams: exec then copies them from a single pipe, in order.
	cmd.Stdout, cmd.Stderr = s, s
	before := sourceStamps(dir)
	// Files are stamped by a coarse clock that may lag behind time.Now.
	start := time.Now().Add(-20 * time.Millisecond)
	err = proc.Run(ctx, cmd)
	s.flush()
	if !maps.Equal(before, sourceStamps(dir)) {
		// An object compiled from a source that was rewritten while the
		// compiler ran is newer than that source, so make would keep it:
		// remove what this build wrote so the next one compiles it again.
		if rmErr := removeOutputsSince(dir, start); rmErr != nil {
			return Result{}, fmt.Errorf("removing outputs of a build whose sources changed: %w", rmErr)
		}
		if ctx.Err() == nil {
			return Result{}, ErrSourcesChanged
		}
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		return Result{}, s.failure(err)
	}
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return Result{}, fmt.Errorf("finding the built module: %w", err)
	}
	ko, err := firstModule(dir, order)
	if err != nil {
		return Result{}, err
	}
	if _, err := os.Stat(ko); err != nil {
		return Result{}, fmt.Errorf("make succeeded but did not produce %s: %w", ko, err)
	}
	return Result{KO: ko}, nil
}

// firstModule returns the .ko for the first entry of a modules.order, which
// names objects as "hello.o", "./hello.ko" or "/abs/dir/hello.o" depending on
// the kernel version.
func firstModule(dir string, order []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(order))
	for sc.Scan() {
		entry := strings.TrimSpace(sc.Text())
		if entry == "" {
			continue
		}
		if !filepath.IsAbs(entry) {
			entry = filepath.Join(dir, entry)
		}
		switch filepath.Ext(entry) {
		case ".ko":
			return entry, nil
		case ".o":
			return strings.TrimSuffix(entry, ".o") + ".ko", nil
		}
		return "", fmt.Errorf("unexpected entry %q in %s/modules.order", entry, dir)
	}
	return "", fmt.Errorf("no module built: %s/modules.order is empty, so obj-m in the Kbuild file names nothing", dir)
}

// argValue returns the value of a make argument given as "NAME=value" (or
// "-Cdir" / "-C dir" for flags), or def if args do not set it.
func argValue(args []string, name, def string) string {
	val := def
	for i, a := range args {
		switch {
		case a == name && strings.HasPrefix(name, "-") && i+1 < len(args):
			val = args[i+1]
		case strings.HasPrefix(a, name) && len(a) > len(name):
			val = a[len(name):]
		}
	}
	return val
}

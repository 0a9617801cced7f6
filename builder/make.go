package builder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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
	err = proc.Run(ctx, cmd)
	s.flush()
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

package nix

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"kwatch/builder"
	"kwatch/kmod"
)

// Derivation builds the module with `nix build`, exactly as the flake
// describes it (`--builder nix`).
type Derivation struct {
	Flake   string // flake directory (absolute)
	Attr    string // flake output, such as "module" (nix looks in packages.<system> first); "" = "module"
	OutLink string // where nix puts the result symlink, such as <state>/module-result
	Nix     Settings
}

// Build builds the derivation and returns the module in its output: a plain
// .ko anywhere in it, or else the .ko.xz, .ko.zst or .ko.gz that
// modules_install put under lib/modules/*/{extra,updates}, decompressed next
// to OutLink (not every insmod in a guest reads every compression). It refuses to build when the flake's git
// repository lacks a build input, since nix would build the stale code.
func (d *Derivation) Build(ctx context.Context, out io.Writer) (builder.Result, error) {
	files, err := untrackedInputs(ctx, d.Flake)
	if err != nil {
		return builder.Result{}, err
	}
	if len(files) > 0 {
		return builder.Result{}, &builder.Error{Fix: "git add -N " + strings.Join(files, " "), Err: untrackedError(files)}
	}
	paths, err := d.Nix.Build(ctx, installable(d.Flake, d.Attr), d.OutLink, out)
	if ctx.Err() != nil {
		return builder.Result{}, ctx.Err()
	}
	if err != nil {
		return builder.Result{}, &builder.Error{Err: err}
	}
	ko, err := findModule(paths[0])
	if err != nil {
		return builder.Result{}, err
	}
	if !strings.HasSuffix(ko, ".ko") {
		if ko, err = d.decompress(ko); err != nil {
			return builder.Result{}, err
		}
	}
	return builder.Result{KO: ko}, nil
}

// Settle returns at once: a derivation's build leaves nothing running.
func (d *Derivation) Settle() {}

// BeginVerify returns nil: a derivation has no fast path to check.
func (d *Derivation) BeginVerify(context.Context) func() (*builder.Mismatch, error) { return nil }

// decompress writes the compressed module ko as a plain .ko into the
// directory module-ko beside OutLink, and returns its path.
func (d *Derivation) decompress(ko string) (string, error) {
	data, err := kmod.Read(ko)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(filepath.Dir(d.OutLink), "module-ko")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("decompressing the module: %w", err)
	}
	plain := filepath.Join(dir, kmod.Base(ko)+".ko")
	tmp := plain + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return "", fmt.Errorf("decompressing the module: %w", err)
	}
	if err := os.Rename(tmp, plain); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("decompressing the module: %w", err)
	}
	return plain, nil
}

func installable(flake, attr string) string {
	if attr == "" {
		attr = "module"
	}
	return flake + "#" + attr
}

// findModule returns the kernel module in a derivation's output: a plain
// .ko anywhere in it, or else a compressed one (.ko.xz, .ko.zst, .ko.gz)
// under lib/modules/*/{extra,updates}.
func findModule(out string) (string, error) {
	plain, err := findFiles(out, ".ko")
	if err != nil {
		return "", err
	}
	found := plain
	if len(found) == 0 {
		dirs, _ := filepath.Glob(filepath.Join(out, "lib", "modules", "*", "*"))
		for _, dir := range dirs {
			if base := filepath.Base(dir); base == "extra" || base == "updates" {
				for _, suffix := range kmod.Suffixes[1:] {
					packed, err := findFiles(dir, suffix)
					if err != nil {
						return "", err
					}
					found = append(found, packed...)
				}
			}
		}
	}
	names := map[string]bool{}
	for _, p := range found {
		names[kmod.Base(p)] = true
	}
	switch {
	case len(names) == 0:
		return "", fmt.Errorf("%s holds no .ko, and no .ko.xz, .ko.zst or .ko.gz under lib/modules/*/{extra,updates}: install the module with make modules_install INSTALL_MOD_PATH=$out", out)
	case len(names) > 1:
		list := make([]string, 0, len(names))
		for name := range names {
			list = append(list, name)
		}
		sort.Strings(list)
		return "", fmt.Errorf("%s holds several modules (%s): kwatch loads one, so build one per flake output", out, strings.Join(list, ", "))
	}
	return found[0], nil
}

// findFiles lists the files under dir whose names end in suffix, in lexical order.
func findFiles(dir, suffix string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, suffix) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("looking for the module in %s: %w", dir, err)
	}
	return files, nil
}

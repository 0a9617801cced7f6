package nix

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// manifestName lists, in a build dir, the files syncTree copied there, so
// that it can tell deleted sources from Kbuild's outputs.
const manifestName = ".kwatch-sources"

// syncTree makes the sources under dst match those under src. It copies new
// and changed files with their modification times, so make rebuilds exactly
// what changed, and deletes the files it copied earlier that src no longer
// has. Kbuild's outputs in dst stay, which keeps the next build incremental.
func syncTree(src, dst string) error {
	old, err := readManifest(dst)
	if err != nil {
		return err
	}
	var copied []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || kbuildOutput(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		copied = append(copied, rel)
		return syncFile(p, filepath.Join(dst, rel))
	})
	if err != nil {
		return fmt.Errorf("copying %s to the build dir %s: %w", src, dst, err)
	}
	current := map[string]bool{}
	for _, rel := range copied {
		current[rel] = true
	}
	for _, rel := range old {
		if !current[rel] {
			err := os.Remove(filepath.Join(dst, rel))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing %s from the build dir: %w", rel, err)
			}
		}
	}
	sort.Strings(copied)
	manifest := strings.Join(copied, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dst, manifestName), []byte(manifest), 0o644); err != nil {
		return fmt.Errorf("writing the build dir's list of sources: %w", err)
	}
	return nil
}

// syncFile copies src to dst unless dst has the same size and mtime already.
func syncFile(src, dst string) error {
	si, err := os.Stat(src)
	if err != nil {
		return err
	}
	if di, err := os.Stat(dst); err == nil && di.Size() == si.Size() && di.ModTime().Equal(si.ModTime()) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// Written aside and renamed, so make never reads half a file.
	tmp := dst + ".kwatch-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, si.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(tmp, si.ModTime(), si.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func readManifest(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, manifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the build dir's list of sources: %w", err)
	}
	defer f.Close()
	var files []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			files = append(files, line)
		}
	}
	return files, sc.Err()
}

// kbuildOutput reports whether a file name is one Kbuild writes into a
// module's directory, as a build run by hand in the source dir leaves them.
func kbuildOutput(name string) bool {
	switch name {
	case "Module.symvers", "modules.order":
		return true
	}
	for _, suffix := range []string{".o", ".ko", ".ko.xz", ".ko.zst", ".ko.gz", ".mod", ".mod.c", ".rmeta", ".a", ".cmd"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

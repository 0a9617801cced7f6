package nix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"kwatch/buildfiles"
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
		if d.IsDir() || buildfiles.IsOutput(d.Name()) {
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

// syncFile copies src to dst unless dst holds the same bytes already. A copy
// is stamped with the time it was made, not with src's mtime: src may have
// been written while the last build compiled its older copy, so src's mtime
// can be older than that object, and make would keep the stale object.
func syncFile(src, dst string) error {
	si, err := os.Stat(src)
	if err != nil {
		return err
	}
	if same, err := sameBytes(src, dst); err != nil || same {
		return err
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
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// sameBytes reports whether files a and b have the same content; a missing b
// is not an error. Module sources are small, so reading them is cheap.
func sameBytes(a, b string) (bool, error) {
	bb, err := os.ReadFile(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ab, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ab, bb), nil
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

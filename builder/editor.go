package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"kwatch/proc"
	"kwatch/replay"
)

// The editor files (compile_commands.json, rust-project.json) are kwatch's
// only while they hold what kwatch last wrote there: one the user or another
// tool (bear, say) wrote is left alone, and so is a symlink, wherever it
// points. What kwatch wrote is remembered by content hash, in EditorRecord
// across runs. kwatch writes them only by renaming a file it created itself
// into place, never through a link.

// updateEditorFile writes what gen returns to the editor file path, if
// kwatch may (see mayWrite) and it does not hold that already.
func (m *Make) updateEditorFile(path string, out io.Writer, gen func() ([]byte, error)) {
	if !m.mayWrite(path, out) {
		return
	}
	data, err := gen()
	if err == nil {
		if old, rerr := os.ReadFile(path); rerr != nil || !bytes.Equal(old, data) {
			err = replaceFile(path, data, 0o644)
		}
	}
	if err == nil {
		err = m.wrote(path)
	}
	if err != nil {
		fmt.Fprintf(out, "kwatch: writing %s: %v\n", filepath.Base(path), err)
	}
}

// mayWrite reports whether kwatch may write the editor file path: it does
// not exist, or is a plain file that still holds what kwatch last wrote. It
// says once per run when it leaves a file alone.
func (m *Make) mayWrite(path string, out io.Writer) bool {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err == nil && fi.Mode().IsRegular() {
		if data, err := os.ReadFile(path); err == nil && m.ownedFiles()[path] == hashOf(data) {
			return true
		}
	}
	if m.leftAlone == nil {
		m.leftAlone = map[string]bool{}
	}
	if !m.leftAlone[path] {
		m.leftAlone[path] = true
		why := "kwatch did not write it"
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			why = "it is a symlink"
		}
		fmt.Fprintf(out, "kwatch: leaving %s as it is: %s (remove it to have kwatch keep it up to date, or pass --editor-files=false)\n", path, why)
	}
	return false
}

// wrote records what path holds now as kwatch's.
func (m *Make) wrote(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	owned := m.ownedFiles()
	owned[path] = hashOf(data)
	if m.EditorRecord == "" {
		return nil
	}
	b, _ := json.MarshalIndent(owned, "", "  ")
	return replaceFile(m.EditorRecord, append(b, '\n'), 0o600)
}

// ownedFiles maps each editor file kwatch wrote to the hash of what it wrote.
func (m *Make) ownedFiles() map[string]string {
	if m.owned == nil {
		m.owned = map[string]string{}
		// A damaged record owns nothing: not the entries read before the
		// damage, and "null" is no record.
		var rec map[string]string
		if b, err := os.ReadFile(m.EditorRecord); err == nil && json.Unmarshal(b, &rec) == nil && rec != nil {
			m.owned = rec
		}
	}
	return m.owned
}

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// replaceFile replaces path with a file holding data: written to a new file
// of kwatch's own beside it (created exclusively, so no link planted there
// is followed), then renamed over path, which replaces a link rather than
// writing through it.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".kwatch-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// rustProject runs Kbuild's rust-analyzer target into a private dir and
// returns the rust-project.json it wrote.
func rustProject(ctx context.Context, g *replay.Graph, out io.Writer) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "kwatch-rust-project-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	ra := g.RustAnalyzer(tmp)
	if ra == nil {
		return nil, fmt.Errorf("no make of the module was recorded")
	}
	ra.Stdout, ra.Stderr = out, out
	if err := proc.Run(ctx, ra); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(tmp, "rust-project.json"))
}

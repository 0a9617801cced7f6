package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// The editor files (compile_commands.json, rust-project.json) are kwatch's
// only while they hold what kwatch last wrote there: one the user or another
// tool (bear, say) wrote is left alone. What kwatch wrote is remembered by
// content hash, in EditorRecord across runs.

// mayWrite reports whether kwatch may write the editor file path: it does
// not exist, or still holds what kwatch last wrote. It says once per run
// when it leaves a file alone.
func (m *Make) mayWrite(path string, out io.Writer) bool {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err == nil && m.ownedFiles()[path] == hashOf(data) {
		return true
	}
	if m.leftAlone == nil {
		m.leftAlone = map[string]bool{}
	}
	if !m.leftAlone[path] {
		m.leftAlone[path] = true
		fmt.Fprintf(out, "kwatch: leaving %s as it is: kwatch did not write it (remove it to have kwatch keep it up to date, or pass --editor-files=false)\n", path)
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
	tmp := m.EditorRecord + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.EditorRecord)
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

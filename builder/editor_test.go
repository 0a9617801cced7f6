package builder

import (
	"bytes"
	"context"
	"io"
	"kwatch/replay"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kwatch writes an editor file that is missing or still its own, never one
// the user or another tool wrote, and remembers across runs what it wrote.
func TestEditorFileOwnership(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(t.TempDir(), "editor-files.json")
	ours, theirs := filepath.Join(dir, "compile_commands.json"), filepath.Join(dir, "rust-project.json")
	write := func(path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(theirs, "made by bear\n")

	var log bytes.Buffer
	m := &Make{EditorRecord: record}
	if !m.mayWrite(ours, &log) {
		t.Fatal("a missing file may not be written")
	}
	write(ours, "v1\n")
	if err := m.wrote(ours); err != nil {
		t.Fatal(err)
	}
	if !m.mayWrite(ours, &log) {
		t.Error("kwatch may not rewrite the file it wrote")
	}
	for range 2 {
		if m.mayWrite(theirs, &log) {
			t.Error("kwatch may write a file it did not write")
		}
	}
	if n := strings.Count(log.String(), "leaving "+theirs+" as it is"); n != 1 {
		t.Errorf("told %d times that %s is left alone, want once:\n%s", n, theirs, log.String())
	}

	// The next run knows the file is kwatch's, until someone else changes it.
	next := &Make{EditorRecord: record}
	if !next.mayWrite(ours, &log) {
		t.Error("the next run may not rewrite the file kwatch wrote")
	}
	write(ours, "edited by hand\n")
	if next.mayWrite(ours, &log) {
		t.Error("kwatch may overwrite a file the user changed")
	}
	if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record %v, %v: want a 0600 file", fi, err)
	}
}

// A damaged record owns nothing, and kwatch goes on to record what it
// writes next.
func TestEditorRecordDamaged(t *testing.T) {
	for _, tt := range []struct{ name, record string }{
		{"null", "null"},
		{"a value that is no hash", `{"/src/a.json": "3b4c", "/src/b.json": 5}`},
		{"cut short", `{"/src/a.json": "3b4c", "/src/b.json"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m := &Make{EditorRecord: filepath.Join(dir, "editor-files.json")}
			if err := os.WriteFile(m.EditorRecord, []byte(tt.record), 0o600); err != nil {
				t.Fatal(err)
			}
			if owned := m.ownedFiles(); len(owned) != 0 {
				t.Errorf("the damaged record %s owns %v", tt.record, owned)
			}
			file := filepath.Join(dir, "compile_commands.json")
			if err := os.WriteFile(file, []byte("[]"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := m.wrote(file); err != nil {
				t.Fatal(err)
			}
			if !(&Make{EditorRecord: m.EditorRecord}).mayWrite(file, io.Discard) {
				t.Error("the next run may not rewrite the file kwatch recorded")
			}
		})
	}
}

// kwatch never writes an editor file through a symlink, neither one at the
// file's own name nor one at the name of a temporary file beside it, and
// leaves a symlink in the editor file's place as it is, even a dangling one.
func TestEditorFileLinks(t *testing.T) {
	tests := []struct {
		name     string
		src      string // hello.c or hello.rs
		file     string // the editor file
		link     string // a symlink planted in the module dir to victim; "" for none
		victim   string // what victim holds; "" if it does not exist
		wantLink bool   // the link is left as it is, and the editor file is not written
	}{
		{"a link at the temporary file's name", "hello.c", "compile_commands.json", "compile_commands.json.tmp", "secret\n", false},
		{"a dangling link", "hello.c", "compile_commands.json", "compile_commands.json", "", true},
		{"a link to a file", "hello.c", "compile_commands.json", "compile_commands.json", "secret\n", true},
		{"no link to rust-project.json", "hello.rs", "rust-project.json", "", "", false},
		{"a dangling link to rust-project.json", "hello.rs", "rust-project.json", "rust-project.json", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, rec := fakeRecords(t, tt.src)
			victim := filepath.Join(t.TempDir(), "victim")
			if tt.victim != "" {
				writeFile(t, victim, tt.victim)
			}
			if tt.link != "" {
				if err := os.Symlink(victim, filepath.Join(dir, tt.link)); err != nil {
					t.Fatal(err)
				}
			}
			m := &Make{Dir: dir, EditorFiles: true, rec: rec}
			var log bytes.Buffer
			m.refresh(context.Background(), dir, true, replay.InputStamps(dir, nil), time.Now(), Result{KO: filepath.Join(dir, "hello.ko"), Path: PathKbuild}, &log)
			if m.graph == nil {
				t.Fatalf("no records read:\n%s", log.String())
			}
			if got, err := os.ReadFile(victim); tt.victim == "" && err == nil || tt.victim != "" && string(got) != tt.victim {
				t.Errorf("the file the link points to was written: %q, %v", got, err)
			}
			fi, err := os.Lstat(filepath.Join(dir, tt.file))
			if tt.wantLink {
				if err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s: %v, %v; want the link left as it is", tt.file, fi, err)
				}
				if !strings.Contains(log.String(), "leaving "+filepath.Join(dir, tt.file)+" as it is") {
					t.Errorf("kwatch did not say it leaves %s alone:\n%s", tt.file, log.String())
				}
				return
			}
			if data, _ := os.ReadFile(filepath.Join(dir, tt.file)); err != nil || !fi.Mode().IsRegular() || !bytes.HasPrefix(data, []byte("[")) && !bytes.HasPrefix(data, []byte("{")) {
				t.Errorf("%s: %v, %v, %q; want a file kwatch wrote\n%s", tt.file, fi, err, data, log.String())
			}
		})
	}
}

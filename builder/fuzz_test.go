package builder

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kwatch/builder/buildertest"
)

// FuzzModinfo reads any .modinfo section from a .ko, plain or compressed
// one of the ways kwatch reads: the file gives back what the section says.
func FuzzModinfo(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, raw []byte, how uint8) {
		want := parseModinfo(raw)
		for key, vals := range want.Fields {
			for _, v := range vals {
				if strings.ContainsAny(key, "=\x00") || strings.Contains(v, "\x00") || !bytes.Contains(raw, []byte(key+"="+v)) {
					t.Fatalf("field %q = %q is not an entry of the section", key, v)
				}
			}
		}
		last := func(key string) string {
			if v := want.Fields[key]; len(v) > 0 {
				return v[len(v)-1]
			}
			return ""
		}
		if want.Name != last("name") || want.Vermagic != last("vermagic") || want.License != last("license") {
			t.Fatalf("%+v: name, vermagic or license is not the last one given", want)
		}
		seen := map[string]bool{}
		for _, p := range want.Params {
			if seen[p.Name] {
				t.Fatalf("parameter %q listed twice", p.Name)
			}
			seen[p.Name] = true
		}
		for _, d := range want.Depends {
			if d == "" || strings.Contains(d, ",") {
				t.Fatalf("dependency %q", d)
			}
		}

		ko := buildertest.ELFWith(".modinfo", raw)
		file, data := "m-x.ko", ko
		switch how % 4 {
		case 1:
			file, data = "m-x.ko.xz", xzBytes(t, ko)
		case 2:
			file, data = "m-x.ko.zst", zstdBytes(t, ko)
		case 3:
			file, data = "m-x.ko.gz", gzipBytes(t, ko)
		}
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if want.Name == "" {
			want.Name = "m_x" // from the file name, as insmod does
		}
		if got, err := ReadModinfo(path); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("ReadModinfo(%s) = %+v, %v; want %+v", file, got, err, want)
		}
	})
}

// FuzzReadModule reads any file as a .ko, as kwatch does with the module
// a build made: errors are one line naming the file.
func FuzzReadModule(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "m.ko")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := ReadModinfo(path)
		switch {
		case err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path)):
			t.Fatalf("error %q: want one line naming %s", err, path)
		case err == nil && info.Name == "":
			t.Fatalf("a module without a name: %+v", info)
		}
		if secs, err := loadSections(path); err == nil {
			for name := range secs {
				if !isCodeOrData(name) {
					t.Fatalf("section %q is neither code nor data", name)
				}
			}
		}
	})
}

// FuzzEditorRecord reads any editor-files.json: a damaged one owns
// nothing, and what kwatch writes next is read back by the next run.
func FuzzEditorRecord(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, record []byte) {
		m := &Make{EditorRecord: filepath.Join(dir, "editor-files.json")}
		if err := os.WriteFile(m.EditorRecord, record, 0o600); err != nil {
			t.Fatal(err)
		}
		var want map[string]string
		if json.Unmarshal(record, &want) != nil || want == nil {
			want = map[string]string{}
		}
		if got := m.ownedFiles(); !maps.Equal(got, want) {
			t.Fatalf("owned %v, want %v", got, want)
		}
		file := filepath.Join(dir, "compile_commands.json")
		if err := os.WriteFile(file, record, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.wrote(file); err != nil {
			t.Fatal(err)
		}
		want[file] = hashOf(record)
		if got := (&Make{EditorRecord: m.EditorRecord}).ownedFiles(); !maps.Equal(got, want) {
			t.Fatalf("the next run owns %v, want %v", got, want)
		}
	})
}

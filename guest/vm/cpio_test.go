package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cpioList lists an archive with the real cpio(1): one `ls -l`-style line per entry.
func cpioList(t *testing.T, archive []byte) []string {
	t.Helper()
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("cpio -itv: %v: %s", err, stderr.String())
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// findEntry returns the listing line of name, or fails.
func findEntry(t *testing.T, list []string, name string) string {
	t.Helper()
	for _, l := range list {
		f := strings.Fields(l)
		if i := indexOf(f, "->"); i > 0 && f[i-1] == name || f[len(f)-1] == name {
			return l
		}
	}
	t.Fatalf("%s is not in the archive:\n%s", name, strings.Join(list, "\n"))
	return ""
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

func TestCPIORoundTrip(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio(1) not installed")
	}
	// Names of 1..4 bytes and data of 0..5 bytes hit every padding case.
	entries := []cpioEntry{
		{Name: "d", Mode: modeDir | 0o700},
		{Name: "d/a", Mode: modeFile | 0o644, Data: []byte("")},
		{Name: "d/ab", Mode: modeFile | 0o600, Data: []byte("1")},
		{Name: "d/abc", Mode: modeFile | 0o755, Data: []byte("12")},
		{Name: "d/abcd", Mode: modeFile | 0o644, Data: []byte("123")},
		{Name: "d/abcde", Mode: modeFile | 0o644, Data: []byte("1234")},
		{Name: "d/abcdef", Mode: modeFile | 0o644, Data: []byte("12345")},
		{Name: "link", Mode: modeSymlink | 0o777, Data: []byte("d/abc")},
		{Name: "console", Mode: modeCharDev | 0o600, Major: 5, Minor: 1},
		{Name: "null", Mode: modeCharDev | 0o666, Major: 1, Minor: 3},
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, entries); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 4", buf.Len())
	}
	list := cpioList(t, buf.Bytes())
	if len(list) != len(entries) {
		t.Fatalf("cpio lists %d entries, want %d:\n%s", len(list), len(entries), strings.Join(list, "\n"))
	}
	for _, tc := range []struct{ name, want string }{
		{"d", `^drwx------ `},
		{"d/ab", `^-rw------- .* 1 `},
		{"d/abc", `^-rwxr-xr-x .* 2 `},
		{"link", `^lrwxrwxrwx .* link -> d/abc$`},
		{"console", `^crw------- .* 5,\s+1 `},
		{"null", `^crw-rw-rw- .* 1,\s+3 `},
	} {
		if l := findEntry(t, list, tc.name); !regexp.MustCompile(tc.want).MatchString(l) {
			t.Errorf("%s: cpio lists %q, want it to match %s", tc.name, l, tc.want)
		}
	}

	// Extract the regular files and compare their contents byte for byte.
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet", "d/*")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("cpio -id: %v: %s", err, out)
	}
	for _, e := range entries {
		if e.Mode&0o170000 != modeFile {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, e.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, e.Data) {
			t.Errorf("%s: extracted %q, want %q", e.Name, got, e.Data)
		}
	}
}

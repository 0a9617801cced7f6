package statedir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// other is a real uid that is not the test's: the state dir's attacker.
const other = 65534

// A state dir someone else could change is refused before anything in it is
// used: kwatch runs what it finds there (gdb-follow's lines, the key the
// guest trusts, the pid vm down signals). Each case builds a path under a
// fresh dir and names the state dir in it; want is "" when Create must
// accept it, else a piece of the refusal.
func TestCreateRefusesUnsafe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making dirs and links of another uid needs root")
	}
	mkdir := func(t *testing.T, p string, mode os.FileMode, uid int) {
		t.Helper()
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.Chmod(p, mode), os.Chown(p, uid, -1)); err != nil {
			t.Fatal(err)
		}
	}
	link := func(t *testing.T, target, p string, uid int) {
		t.Helper()
		if err := errors.Join(os.Symlink(target, p), os.Lchown(p, uid, -1)); err != nil {
			t.Fatal(err)
		}
	}
	me := os.Geteuid()
	tests := []struct {
		name  string
		setup func(t *testing.T, root string) string // returns the state dir
		want  string
	}{
		{"missing", func(t *testing.T, root string) string { return filepath.Join(root, "a", "state") }, ""},
		{"yours, 0700", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "state"), 0o700, me)
			return filepath.Join(root, "state")
		}, ""},
		{"another's", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "state"), 0o700, other)
			return filepath.Join(root, "state")
		}, "the state dir " + "ROOT/state belongs to uid 65534"},
		{"open to all", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "state"), 0o777, me)
			return filepath.Join(root, "state")
		}, "is writable by its group and others (mode 0777)"},
		{"open to its group", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "state"), 0o770, me)
			return filepath.Join(root, "state")
		}, "is writable by its group (mode 0770)"},
		{"sticky, open to all", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "state"), 0o777|os.ModeSticky, me)
			return filepath.Join(root, "state")
		}, "is writable by its group and others (mode 1777)"},
		{"not a directory", func(t *testing.T, root string) string {
			if err := os.WriteFile(filepath.Join(root, "state"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(root, "state")
		}, "ROOT/state is not a directory"},
		{"in another's dir", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "demo"), 0o755, other)
			return filepath.Join(root, "demo", "state")
		}, "ROOT/demo, above the state dir, belongs to uid 65534"},
		{"yours in another's dir", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "demo"), 0o755, other)
			mkdir(t, filepath.Join(root, "demo", "state"), 0o700, me)
			return filepath.Join(root, "demo", "state")
		}, "ROOT/demo, above the state dir, belongs to uid 65534"},
		{"in a dir open to all", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "demo"), 0o777, me)
			mkdir(t, filepath.Join(root, "demo", "state"), 0o700, me)
			return filepath.Join(root, "demo", "state")
		}, "ROOT/demo, above the state dir, is writable by its group and others (mode 0777)"},
		{"in a dir like /tmp", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "tmp"), 0o777|os.ModeSticky, 0)
			return filepath.Join(root, "tmp", "demo", "state")
		}, ""},
		{"a link of yours", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "real"), 0o700, me)
			link(t, "real", filepath.Join(root, "state"), me)
			return filepath.Join(root, "state")
		}, ""},
		{"a link of yours, up and down", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "a", "real"), 0o700, me)
			mkdir(t, filepath.Join(root, "b"), 0o700, me)
			link(t, "../a/real", filepath.Join(root, "b", "l"), me)
			link(t, filepath.Join(root, "b", "l"), filepath.Join(root, "abs"), me)
			return filepath.Join(root, "abs")
		}, ""},
		{"another's link", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "tmp"), 0o777|os.ModeSticky, 0)
			mkdir(t, filepath.Join(root, "real"), 0o700, me)
			link(t, filepath.Join(root, "real"), filepath.Join(root, "tmp", "demo"), other)
			return filepath.Join(root, "tmp", "demo")
		}, "ROOT/tmp/demo, on the way to the state dir, is a symlink owned by uid 65534"},
		{"another's link above", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "real", "state"), 0o700, me)
			link(t, "real", filepath.Join(root, "demo"), other)
			return filepath.Join(root, "demo", "state")
		}, "ROOT/demo, on the way to the state dir, is a symlink owned by uid 65534"},
		{"your link to another's dir", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "theirs"), 0o700, other)
			link(t, "theirs", filepath.Join(root, "state"), me)
			return filepath.Join(root, "state")
		}, "the state dir ROOT/theirs belongs to uid 65534"},
		{"a link loop", func(t *testing.T, root string) string {
			link(t, "b", filepath.Join(root, "a"), me)
			link(t, "a", filepath.Join(root, "b"), me)
			return filepath.Join(root, "a", "state")
		}, "too many symlinks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := tt.setup(t, root)
			err := Create(dir)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Create(%s) = %v, want it accepted", dir, err)
				}
				if fi, err := os.Stat(filepath.Join(dir, ".gitignore")); err != nil || !fi.Mode().IsRegular() {
					t.Fatalf("Create accepted %s but made no .gitignore: %v", dir, err)
				}
				return
			}
			want := strings.ReplaceAll(tt.want, "ROOT", root)
			var unsafe *UnsafeError
			if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), want) || unsafe.Fix == "" {
				t.Fatalf("Create(%s) = %v, want an UnsafeError with a fix, saying %q", dir, err, want)
			}
			if _, err := os.Lstat(filepath.Join(dir, ".gitignore")); err == nil {
				t.Error("Create wrote into a state dir it refused")
			}
			if err := Check(dir); err == nil || err.Error() != unsafe.Error() {
				t.Errorf("Check(%s) = %v, want Create's refusal", dir, err)
			}
		})
	}
}

// A dir writable by its group is safe above the state dir when the group is
// yours alone: Debian gives each user such a group and a umask of 002, so
// every dir they make is group-writable.
func TestPrivateGroup(t *testing.T) {
	const passwd = "root:x:0:0:root:/root:/bin/bash\n" +
		"alice:x:1000:1000::/home/alice:/bin/bash\n" +
		"bob:x:1001:1001::/home/bob:/bin/bash\n" +
		"carol:x:1002:1000::/home/carol:/bin/bash\n" +
		"alias:x:1000:1003::/home/alice:/bin/bash\n"
	const group = "root:x:0:\n" +
		"alice:x:1000:\n" +
		"bob:x:1001:alice\n" +
		"dev:x:1004:alice,bob\n" +
		"solo:x:1005:alice\n" +
		"alias:x:1003:\n" +
		"empty:x:1006:\n"
	tests := []struct {
		gid, uid uint32
		want     bool
	}{
		{1001, 1001, false}, // bob's own group, but alice is in it too
		{1004, 1000, false}, // a shared group
		{1005, 1000, true},  // alice is its only member
		{1003, 1000, true},  // the primary group of another name of alice's uid
		{1000, 1000, false}, // carol has it as her primary group
		{1006, 1000, false}, // no members: a setgid program's, say
		{1007, 1000, false}, // not in /etc/group: its members are unknown
		{0, 0, true},
	}
	for _, tt := range tests {
		if got := privateGroup(tt.gid, tt.uid, []byte(passwd), []byte(group)); got != tt.want {
			t.Errorf("privateGroup(gid %d, uid %d) = %v, want %v", tt.gid, tt.uid, got, tt.want)
		}
	}
}

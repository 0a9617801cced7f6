package vm

import (
	"path/filepath"
	"testing"
)

func TestELFDeps(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		want []string // base names that must be among the dependencies
		none bool
	}{
		{bin: "/usr/sbin/dropbear", want: []string{"libtomcrypt.so.1", "libtommath.so.1", "libc.so.6", "ld-linux-x86-64.so.2"}},
		{bin: "/usr/lib/openssh/sftp-server", want: []string{"libc.so.6", "ld-linux-x86-64.so.2"}},
		{bin: "/usr/bin/busybox", none: true},
	} {
		t.Run(filepath.Base(tc.bin), func(t *testing.T) {
			deps, err := elfDeps(tc.bin)
			if err != nil {
				t.Fatal(err)
			}
			if tc.none && len(deps) > 0 {
				t.Fatalf("static %s has dependencies %v", tc.bin, deps)
			}
			got := map[string]bool{}
			for _, d := range deps {
				if !filepath.IsAbs(d) {
					t.Errorf("dependency %s is not an absolute path", d)
				}
				got[filepath.Base(d)] = true
			}
			for _, w := range tc.want {
				if !got[w] {
					t.Errorf("dependencies of %s = %v, missing %s", tc.bin, deps, w)
				}
			}
		})
	}
}

func TestELFDepsNotELF(t *testing.T) {
	if _, err := elfDeps("/etc/passwd"); err == nil {
		t.Fatal("elfDeps accepted a text file")
	}
}

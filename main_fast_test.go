package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fast path's module runs in the guest, on each Debian kernel: the
// first build is Kbuild's, a header edit of the tally-c example (two
// objects, an exported symbol) takes the fast path, and the guest then runs
// the new version, with its BTF where the kernel has BTF (6.12).
func TestFastPathReload(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := t.TempDir()
		copyDir(t, "examples/tally-c", dir)
		w := startWatch(t, append(v.args(), dir)...)
		loaded := func(path string) {
			t.Helper()
			evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed")
			if last := evs[len(evs)-1]; last.Event != "loaded" || last.Path != path {
				t.Fatalf("cycle ended with %+v, want loaded through the %s path", last, path)
			}
		}
		loaded("kbuild")
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/tally/version")); got != "1" {
			t.Fatalf("guest runs tally version %q, want 1", got)
		}

		hdr := filepath.Join(dir, "tally.h")
		replaceInFile(t, hdr, "#define TALLY_VERSION 1", "#define TALLY_VERSION 2")
		loaded("fast")
		if got := strings.TrimSpace(guestRun(t, v.state, "cat /sys/module/tally/version")); got != "2" {
			t.Fatalf("after the fast build the guest runs tally version %q, want 2", got)
		}
		if log := guestRun(t, v.state, "dmesg"); !strings.Contains(log, "tally: version 2 loaded") {
			t.Fatalf("guest log lacks the new version's init message:\n%s", log)
		}
		// Module BTF is made against the headers' vmlinux, which Debian
		// ships from 6.12 on.
		if _, err := os.Stat(filepath.Join(v.Build, "vmlinux")); err == nil {
			if btf := guestRun(t, v.state, "test -e /sys/kernel/btf/tally && echo yes"); btf != "yes\n" {
				t.Errorf("the fast build's module has no BTF in the guest (/sys/kernel/btf/tally)")
			}
		}
		w.stop()
		noStrayProcesses(t, dir)
	})
}

func replaceInFile(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q (%v)", path, old, err)
	}
	writeFile(t, path, strings.Replace(string(data), old, new, 1))
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fast path's module runs in the guest: the first build is Kbuild's,
// a header edit of the tally-c example (two objects, an exported symbol)
// takes the fast path, and the guest then runs the new version.
func TestFastPathReload(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	copyDir(t, "examples/tally-c", dir)
	w := startWatch(t, append(vmArgs(e2eState), dir)...)
	loaded := func(path string) {
		t.Helper()
		evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed")
		if last := evs[len(evs)-1]; last.Event != "loaded" || last.Path != path {
			t.Fatalf("cycle ended with %+v, want loaded through the %s path", last, path)
		}
	}
	loaded("kbuild")
	if got := strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/tally/version")); got != "1" {
		t.Fatalf("guest runs tally version %q, want 1", got)
	}

	hdr := filepath.Join(dir, "tally.h")
	replaceInFile(t, hdr, "#define TALLY_VERSION 1", "#define TALLY_VERSION 2")
	loaded("fast")
	if got := strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/tally/version")); got != "2" {
		t.Fatalf("after the fast build the guest runs tally version %q, want 2", got)
	}
	if log := guestRun(t, e2eState, "dmesg"); !strings.Contains(log, "tally: version 2 loaded") {
		t.Fatalf("guest log lacks the new version's init message:\n%s", log)
	}
	w.stop()
	noStrayProcesses(t, dir)
}

func replaceInFile(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q (%v)", path, old, err)
	}
	writeFile(t, path, strings.Replace(string(data), old, new, 1))
}

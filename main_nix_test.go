package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kwatch/guest/vm"
	"kwatch/nix/nixtest"
)

// TestNix runs kwatch with --vm nix and --builder nix on a flake project:
// a git repository whose flake builds the module in src/ and a VM that boots
// the host's kernel with kwatch's initramfs (nixtest's stand-in for a NixOS
// VM). The subtests share the project and its VM, as a user's runs would.
func TestNix(t *testing.T) {
	nixtest.Need(t)
	nixtest.SetConfig()
	kernel, modules := nixtest.HostKernel(t)
	state := filepath.Join(t.TempDir(), "state")
	project := t.TempDir()
	flake := nixtest.Flake{Modules: modules, Kernel: kernel, Initrd: nixtest.Initramfs(t, state, modules)}
	nixtest.WriteFlake(t, project, flake)
	nixtest.WriteModule(t, project)
	nixtest.Git(t, project, "init", "-q")
	nixtest.Git(t, project, "add", "-A")
	t.Cleanup(func() {
		if out, errOut, code := kwatchRun(t, "vm", "down", "--state-dir", state); code != 0 {
			t.Errorf("vm down: exit %d\n%s%s", code, out, errOut)
		}
		noStrayProcesses(t, project)
		noStrayProcesses(t, state)
	})
	args := func(mode string, more ...string) []string {
		return append([]string{"--vm", "nix", "--nix-vm-attr", "packages.x86_64-linux.vm", "--accel", "tcg",
			"--state-dir", state, "--builder", "nix", "--nix-mode", mode, project}, more...)
	}
	version := func(t *testing.T) string {
		t.Helper()
		return strings.TrimSpace(guestRun(t, state, "cat /sys/module/hello/version"))
	}

	t.Run("derivation once", func(t *testing.T) {
		stdout, stderr, code := kwatchRun(t, args("derivation", "--once", "--json")...)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		if _, ok := findEvent(parseEvents(t, stdout), "loaded"); !ok {
			t.Fatalf("no loaded event:\n%s", stdout)
		}
		// The first VM build says where it is, one line per derivation (stderr is no terminal).
		if !regexp.MustCompile(`(?m)^nix: \d+m\d\ds building \S`).MatchString(stderr) {
			t.Errorf("the VM build shows no progress line:\n%s", stderr)
		}
		if !strings.Contains(guestRun(t, state, "cat /proc/modules"), "hello ") {
			t.Fatal("hello missing from the guest's /proc/modules")
		}
	})

	// A module the derivation installs compressed is loaded all the same.
	t.Run("derivation compressed", func(t *testing.T) {
		for _, attr := range []string{"module-zst", "module-gz"} {
			guestRun(t, state, "rmmod hello; true")
			stdout, stderr, code := kwatchRun(t, args("derivation", "--once", "--json", "--module-attr", attr)...)
			if code != 0 {
				t.Fatalf("%s: exit %d\n%s\n%s", attr, code, stdout, stderr)
			}
			if _, ok := findEvent(parseEvents(t, stdout), "loaded"); !ok {
				t.Fatalf("%s: no loaded event:\n%s", attr, stdout)
			}
			if got := version(t); got != "1" {
				t.Fatalf("%s: guest runs hello version %q, want 1", attr, got)
			}
		}
	})

	t.Run("incremental watch", func(t *testing.T) {
		w := startWatch(t, args("incremental")...)
		loaded := func(timeout time.Duration) []jsonEvent {
			t.Helper()
			evs := w.next(timeout, "loaded", "load_failed", "build_failed")
			if last := evs[len(evs)-1]; last.Event != "loaded" {
				t.Fatalf("cycle ended with %+v", last)
			}
			return evs
		}
		loaded(5 * time.Minute)
		if got := version(t); got != "1" {
			t.Fatalf("guest runs version %q, want 1", got)
		}

		nixtest.WriteFile(t, filepath.Join(project, "src", "hello.c"), nixtest.HelloC(`"2"`))
		loaded(2 * time.Minute)
		if got := version(t); got != "2" {
			t.Fatalf("guest runs version %q after the edit, want 2", got)
		}

		// A new flake.nix changes the VM's out path: kwatch says so, boots
		// the new VM and loads the module into it.
		before := vmPID(t, state)
		nixtest.WriteFlake(t, project, flake)
		evs := loaded(5 * time.Minute)
		restarted, sawInit := false, false
		for _, e := range evs {
			if e.Event == "notice" && strings.Contains(e.Message, "configuration changed") {
				restarted = true
				if e.Time.IsZero() {
					t.Errorf("notice without time: %+v", e)
				}
			}
			sawInit = sawInit || (e.Event == "kmsg" && strings.Contains(e.Message, "hello: version 2 loaded"))
		}
		if !restarted {
			t.Errorf("no notice that the VM's configuration changed: %+v", evs)
		}
		if !sawInit {
			t.Errorf("the new VM's kernel log was not streamed: %+v", evs)
		}
		if after := vmPID(t, state); after == before {
			t.Errorf("the VM (pid %d) was not restarted", before)
		}
		if got := version(t); got != "2" {
			t.Fatalf("the new VM runs version %q, want 2", got)
		}
		w.stop()
	})

	t.Run("untracked input", func(t *testing.T) {
		nixtest.WriteFile(t, filepath.Join(project, "src", "extra.h"), "#define EXTRA 1\n")
		nixtest.WriteFile(t, filepath.Join(project, "src", "Kbuild"), "obj-m := hello.o\nccflags-y := -include $(src)/extra.h\n")
		stdout, stderr, code := kwatchRun(t, args("derivation", "--once", "--json")...)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, stdout, stderr)
		}
		e, ok := findEvent(parseEvents(t, stdout), "build_failed")
		if !ok || !strings.Contains(e.Message, "src/extra.h is not tracked by git") || !strings.Contains(e.Message, "git add -N src/extra.h") {
			t.Fatalf("build_failed should name src/extra.h and git add -N: %+v\n%s", e, stdout)
		}

		// The advice works: once git knows the file, nix builds with it.
		nixtest.Git(t, project, "add", "-N", "src/extra.h")
		if stdout, stderr, code := kwatchRun(t, args("derivation", "--once", "--json")...); code != 0 {
			t.Fatalf("after git add -N: exit %d\n%s\n%s", code, stdout, stderr)
		}
	})
}

func vmPID(t *testing.T, state string) int {
	t.Helper()
	st, ok, err := vm.ReadState(state)
	if err != nil || !ok {
		t.Fatalf("no VM state in %s (%v)", state, err)
	}
	return st.PID
}

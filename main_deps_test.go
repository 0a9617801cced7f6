package main

import (
	"kwatch/guest/vm/vmtest"
	"kwatch/kmod"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// v4l2loopback, as its authors publish it, needs videodev, which needs mc:
// modules Debian builds as modules (.ko on 6.1, .ko.xz on 6.12). kwatch
// loads them first, once per boot, and again after the guest restarted.
func TestV4L2LoopbackDependencies(t *testing.T) {
	eachKernel(t, func(t *testing.T, v e2eVM) {
		dir := t.TempDir()
		copyDir(t, "../shared/corpus/v4l2loopback", dir)
		const name = "cat /sys/devices/virtual/video4linux/video0/name"

		// --once: the dependencies are loaded before it, and the device exists.
		stdout, stderr, code := kwatchRun(t, append(v.args(), "--once", "--json", "--params", "devices=1", "--run", name, dir)...)
		if code != 0 {
			t.Fatalf("--once: exit %d\n%s\n%s", code, stdout, stderr)
		}
		evs := parseEvents(t, stdout)
		out, ok := findEvent(evs, "run_output")
		if !ok || out.Exit == nil || *out.Exit != 0 || strings.TrimSpace(out.Output) == "" {
			t.Fatalf("%s in the guest: %+v\n%s", name, out, stdout)
		}
		for _, m := range []string{"mc", "videodev", "v4l2loopback"} {
			guestRun(t, v.state, "test -e /sys/module/"+m+"/refcnt")
		}
		// Headers that ship a BTF vmlinux (6.12's) give the module BTF, and
		// the upload keeps it: the kernel publishes it.
		if _, err := os.Stat(filepath.Join(v.Build, "vmlinux")); err == nil {
			guestRun(t, v.state, "test -e /sys/kernel/btf/v4l2loopback")
		}

		// Watch mode: an edit reloads v4l2loopback; videodev and mc stay
		// loaded, and are not loaded again.
		w := startWatch(t, append(v.args(), "--params", "devices=1", dir)...)
		w.expectLoaded(3 * time.Minute)
		src := filepath.Join(dir, "v4l2loopback.c")
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, src, strings.Replace(string(data), "#include", "/* kwatch edit */\n#include", 1))
		evs = w.expectLoaded(3 * time.Minute)
		for _, e := range evs {
			if e.Event == "notice" && strings.Contains(e.Message, "in the guest first") {
				t.Errorf("dependencies loaded again on a save: %q", e.Message)
			}
		}
		guestRun(t, v.state, "test -e /sys/module/videodev/refcnt && test -e /sys/module/mc/refcnt && test -e /sys/devices/virtual/video4linux/video0/name")

		// The guest dies: the new boot gets the dependencies, then the last good build.
		if err := syscall.Kill(qemuPID(t, v.state), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var deps, restored bool
		for !restored {
			e := w.next(3*time.Minute, "notice")
			msg := e[len(e)-1].Message
			deps = deps || strings.Contains(msg, "loaded mc, videodev in the guest first")
			restored = strings.Contains(msg, "loaded the last good v4l2loopback again")
		}
		if !deps {
			t.Error("no notice that mc and videodev were loaded into the new boot")
		}
		guestRun(t, v.state, "test -e /sys/module/videodev/refcnt && test -e /sys/devices/virtual/video4linux/video0/name")
		w.stop()
		noStrayProcesses(t, dir)
	})
}

// A guest whose kernel lacks a dependency (here: a modules directory with
// only what the guest needs to boot): the load fails in one line naming the
// missing module, the symbol it was needed for and where kwatch looked.
func TestMissingDependency(t *testing.T) {
	needGuest(t)
	k := vmtest.Oldest()
	modules := filepath.Join(t.TempDir(), k.Release)
	x, err := kmod.ReadIndex(k.Modules)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := x.Resolve([]string{"e1000", "virtio_pci", "9pnet_virtio", "9p"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{}
	for _, m := range plan.Load {
		rel := x.Path(m)
		keep[rel] = true
		data, err := os.ReadFile(filepath.Join(k.Modules, rel))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(modules, rel), string(data))
	}
	all, err := os.ReadFile(filepath.Join(k.Modules, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	var dep []string
	for _, line := range strings.Split(string(all), "\n") {
		if mod, _, _ := strings.Cut(line, ":"); keep[mod] {
			dep = append(dep, line)
		}
	}
	writeFile(t, filepath.Join(modules, "modules.dep"), strings.Join(dep, "\n")+"\n")

	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { kwatchRun(t, "vm", "down", "--state-dir", state) })
	dir := t.TempDir()
	copyDir(t, "../shared/corpus/v4l2loopback", dir)
	args := []string{"--vm", "qemu", "--kernel", k.Image, "--modules-dir", modules, "--kdir", k.Build,
		"--accel", "tcg", "--state-dir", state, "--once", "--json", dir}
	stdout, stderr, code := kwatchRun(t, args...)
	if code != 1 {
		t.Fatalf("--once with videodev missing: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	e, ok := findEvent(parseEvents(t, stdout), "load_failed")
	if !ok {
		t.Fatalf("no load_failed event:\n%s", stdout)
	}
	t.Logf("load_failed: %s (hint: %s)", e.Message, e.Hint)
	for _, want := range []string{"videodev is not a module of the guest's kernel", "/lib/modules/" + k.Release + "/modules.dep", "v4l2loopback needs it for "} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("load_failed %q lacks %q", e.Message, want)
		}
	}
	if strings.Contains(e.Message, "\n") || e.Hint == "" {
		t.Errorf("want one line and a hint: %q (hint %q)", e.Message, e.Hint)
	}
	if out := guestRun(t, state, "ls /sys/module"); strings.Contains(out, "v4l2loopback") {
		t.Error("v4l2loopback was loaded without its dependency")
	}
}

package ssh

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/kmsg"
	"kwatch/proc"
)

func TestListsModule(t *testing.T) {
	const procModules = "kw_hello 16384 0 - Live 0xffffffffc0353000 (OE)\n" +
		"e1000 167936 0 - Live 0xffffffffc0316000\n" +
		"kw_sticky 16384 0 - Loading 0xffffffffc0300000 (OE)\n"
	tests := []struct {
		name string
		want bool
	}{
		{"kw_hello", true},
		{"kw-hello", true},
		{"e1000", true},
		{"kw_sticky", true},
		{"kw", false},
		{"hello", false},
		{"e100", false},
		{"16384", false},
	}
	for _, tt := range tests {
		if got := listsModule([]byte(procModules), tt.name); got != tt.want {
			t.Errorf("listsModule(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The test modules: kw-hello logs its parameters on load and unload;
// kw-sticky has no exit function, so the kernel refuses to unload it.
const (
	helloC = `#include <linux/module.h>
static char *greeting = "hello";
static int count = 1;
module_param(greeting, charp, 0444);
module_param(count, int, 0444);
static int __init kw_init(void) { pr_info("kw-hello: loaded, greeting=%s count=%d\n", greeting, count); return 0; }
static void __exit kw_exit(void) { pr_info("kw-hello: unloaded\n"); }
module_init(kw_init);
module_exit(kw_exit);
MODULE_LICENSE("GPL");
`
	stickyC = `#include <linux/module.h>
static int __init kw_init(void) { pr_info("kw-sticky: loaded\n"); return 0; }
module_init(kw_init);
MODULE_LICENSE("GPL");
`
)

// buildModules builds the test modules with Kbuild and returns their directory.
func buildModules(t testing.TB) string {
	t.Helper()
	kdir := filepath.Join(debianModules, "build")
	if _, err := os.Stat(filepath.Join(kdir, "Makefile")); err != nil {
		t.Skipf("no kernel headers at %s", kdir)
	}
	dir := t.TempDir()
	files := map[string]string{
		"kw-hello.c":  helloC,
		"kw-sticky.c": stickyC,
		"Kbuild":      "obj-m := kw-hello.o kw-sticky.o\n",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	var out bytes.Buffer
	cmd := exec.Command("make", "-C", kdir, "M="+dir, "modules")
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := proc.Run(ctx, cmd); err != nil {
		t.Fatalf("building the test modules: %v\n%s", err, out.String())
	}
	return dir
}

// bootGuest boots the Debian kernel under TCG with kwatch's initramfs and
// returns a Client logged in to it.
func bootGuest(t testing.TB) *Client {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM")
	}
	for _, f := range []string{debianKernel, debianModules} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("needs %s", f)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	signer, authorized, err := LoadOrCreateKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := vm.EnsureHostKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(stateDir, "initramfs.cpio.gz")
	if err := vm.WriteInitramfs(initrd, vm.InitramfsConfig{AuthorizedKey: authorized, HostKey: hostKey, ModulesDir: debianModules}); err != nil {
		t.Fatal(err)
	}
	v := &vm.Process{
		StateDir: stateDir,
		Kind:     guest.QEMU,
		Ident:    "guest-e2e",
		Launch:   vm.QEMUConfig{Kernel: debianKernel, Initramfs: initrd, ModulesDir: debianModules}.Launcher(),
		Accel:    "tcg",
	}
	t.Cleanup(func() {
		if err := v.Down(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := v.Up(ctx, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, Config{
		Addr:       "127.0.0.1:" + strconv.Itoa(st.Port),
		Signers:    []xssh.Signer{signer},
		KnownHosts: filepath.Join(stateDir, "known_hosts"),
		TrustNew:   true,
		Timeout:    30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kmsgWatcher follows the guest's kernel log in the background.
type kmsgWatcher struct {
	records chan kmsg.Record
	stop    func()
}

func watchKmsg(t *testing.T, c *Client) *kmsgWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &kmsgWatcher{records: make(chan kmsg.Record, 10000)}
	done := make(chan error, 1)
	go func() { done <- c.StreamKmsg(ctx, 0, func(r kmsg.Record) { w.records <- r }) }()
	w.stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("StreamKmsg: %v", err)
		}
	}
	return w
}

// waitFor returns the first record containing text, failing after a minute.
func (w *kmsgWatcher) waitFor(t *testing.T, text string) kmsg.Record {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case r := <-w.records:
			if strings.Contains(r.Message, text) {
				return r
			}
		case <-timeout:
			t.Fatalf("%q did not appear in the guest's kernel log", text)
		}
	}
}

// TestReloadInGuest builds real modules, boots a real kernel under TCG and
// reloads them over SSH, following the guest's kernel log.
func TestReloadInGuest(t *testing.T) {
	c := bootGuest(t)
	dir := buildModules(t)
	ctx := testContext(t)
	kmsg := watchKmsg(t, c)
	defer kmsg.stop()

	if uname, _, _, err := c.Run(ctx, "uname -r"); err != nil || strings.TrimSpace(string(uname)) != debianRelease {
		t.Fatalf("guest uname -r = %q, %v", uname, err)
	}
	// Another user of the guest made the old fixed upload dir first, open to all.
	const hostile = "/tmp/kwatch"
	if _, _, exit, err := c.Run(ctx, "mkdir "+hostile+" && chown 1000:1000 "+hostile+" && chmod 0777 "+hostile); err != nil || exit != 0 {
		t.Fatalf("making %s: exit %d, %v", hostile, exit, err)
	}
	remote, _, err := c.Upload(ctx, filepath.Join(dir, "kw-hello.ko"), "kw-hello.ko")
	if err != nil {
		t.Fatal(err)
	}
	updir := path.Dir(remote)
	if updir == hostile || !strings.HasPrefix(updir, "/tmp/kwatch.") {
		t.Fatalf("uploaded to %s, want a fresh /tmp/kwatch.* dir", remote)
	}
	if out, _, _, err := c.Run(ctx, "stat -c '%u %a %F' "+updir+"; ls -A "+hostile); err != nil || string(out) != "0 700 directory\n" {
		t.Fatalf("upload dir stat and the hostile dir's contents = %q, %v; want \"0 700 directory\" and nothing in %s", out, err, hostile)
	}
	if loaded, err := c.Loaded(ctx, "kw-hello"); err != nil || loaded {
		t.Fatalf("Loaded before the first load = %v, %v", loaded, err)
	}

	// The kernel takes double quotes around a value with spaces; the shell must pass all of it untouched.
	res, err := c.Reload(ctx, "kw-hello", remote, []string{`greeting="hi there; $(reboot)"`})
	if err != nil || res.Unloaded || res.UnloadErr != "" || res.LoadErr != "" {
		t.Fatalf("first Reload = %+v, %v; want a plain load", res, err)
	}
	if loaded, err := c.Loaded(ctx, "kw-hello"); err != nil || !loaded {
		t.Fatalf("Loaded after Reload = %v, %v", loaded, err)
	}
	r := kmsg.waitFor(t, "kw-hello: loaded")
	if want := "kw-hello: loaded, greeting=hi there; $(reboot) count=1"; r.Message != want || r.Level != 6 {
		t.Errorf("load message %+v, want level 6 %q", r, want)
	}
	// An out-of-tree, unsigned module taints the kernel O and E: flags of
	// five digits, which busybox's read would cut to one.
	if taint, err := c.Tainted(ctx); err != nil || taint&(1<<12|1<<13) != 1<<12|1<<13 {
		t.Errorf("Tainted after the load = %d, %v; want the O and E flags (%d) set", taint, err, 1<<12|1<<13)
	}

	res, err = c.Reload(ctx, "kw-hello", remote, []string{"count=2"})
	if err != nil || !res.Unloaded || res.UnloadErr != "" || res.LoadErr != "" {
		t.Fatalf("second Reload = %+v, %v; want unload and load", res, err)
	}
	kmsg.waitFor(t, "kw-hello: unloaded")
	kmsg.waitFor(t, "count=2")

	// A load that fails leaves the module unloaded, and says why.
	res, err = c.Reload(ctx, "kw-hello", remote, []string{"count=many"})
	if err != nil || !res.Unloaded || res.LoadErr == "" {
		t.Fatalf("Reload with a bad parameter = %+v, %v; want unload, then a load error", res, err)
	}
	t.Logf("load error: %s", res.LoadErr)
	if loaded, err := c.Loaded(ctx, "kw-hello"); err != nil || loaded {
		t.Errorf("Loaded after a failed load = %v, %v", loaded, err)
	}

	// A module that cannot be unloaded: no insmod is tried.
	sticky, _, err := c.Upload(ctx, filepath.Join(dir, "kw-sticky.ko"), "kw-sticky.ko")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Reload(ctx, "kw-sticky", sticky, nil); err != nil || res.LoadErr != "" {
		t.Fatalf("loading kw-sticky = %+v, %v", res, err)
	}
	if err := c.WriteKmsg(ctx, "kwatch: before the second kw-sticky load"); err != nil {
		t.Fatal(err)
	}
	res, err = c.Reload(ctx, "kw-sticky", sticky, nil)
	if err != nil || res.Unloaded || res.UnloadErr == "" || res.LoadErr != "" {
		t.Fatalf("Reload of a module that cannot unload = %+v, %v; want an unload error and nothing else", res, err)
	}
	t.Logf("unload error: %s", res.UnloadErr)
	kmsg.waitFor(t, "kw-sticky: loaded")
	kmsg.waitFor(t, "kwatch: before the second kw-sticky load")
	if err := c.WriteKmsg(ctx, "kwatch: after"); err != nil {
		t.Fatal(err)
	}
	// Between the two markers there must be no second load.
	for {
		r := kmsg.waitFor(t, "kw")
		if strings.Contains(r.Message, "kw-sticky: loaded") {
			t.Error("kw-sticky was loaded again although its unload failed")
		}
		if r.Message == "kwatch: after" {
			break
		}
	}

	// Done with the guest: the upload dir goes, with what kwatch put there;
	// the hostile dir is not kwatch's and stays.
	if err := c.RemoveUploads(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _, _, err := c.Run(ctx, "ls -d /tmp/kwatch*"); err != nil || string(out) != hostile+"\n" {
		t.Errorf("after RemoveUploads /tmp has %q (%v), want only %s", out, err, hostile)
	}
	// A dir someone else could write to is refused, even kwatch's own.
	if _, _, err := c.Upload(ctx, filepath.Join(dir, "kw-hello.ko"), "kw-hello.ko"); err != nil {
		t.Fatal(err)
	}
	if _, _, exit, err := c.Run(ctx, "chmod 0777 /tmp/kwatch.*"); err != nil || exit != 0 {
		t.Fatalf("chmod: exit %d, %v", exit, err)
	}
	if _, _, err := c.Upload(ctx, filepath.Join(dir, "kw-hello.ko"), "kw-hello.ko"); err == nil || !strings.Contains(err.Error(), "mode 0777") {
		t.Errorf("Upload into a dir of mode 0777: error %v, want one naming the mode", err)
	}
}

// BenchmarkUploadReload measures one deploy of a rebuilt module to a running
// TCG guest: upload, rmmod, insmod.
func BenchmarkUploadReload(b *testing.B) {
	c := bootGuest(b)
	dir := buildModules(b)
	ctx := testContext(b)
	for b.Loop() {
		remote, _, err := c.Upload(ctx, filepath.Join(dir, "kw-hello.ko"), "kw-hello.ko")
		if err != nil {
			b.Fatal(err)
		}
		if res, err := c.Reload(ctx, "kw-hello", remote, nil); err != nil || res.LoadErr != "" || res.UnloadErr != "" {
			b.Fatalf("Reload = %+v, %v", res, err)
		}
	}
}

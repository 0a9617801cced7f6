package vm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"kwatch/guest"
	"kwatch/proc"
)

func TestKernelVersion(t *testing.T) {
	v, err := KernelVersion(debianKernel)
	if err != nil {
		t.Fatal(err)
	}
	if v != debianRelease {
		t.Fatalf("KernelVersion(%s) = %q, want %s", debianKernel, v, debianRelease)
	}
	if _, err := KernelVersion("/usr/bin/busybox"); err == nil {
		t.Fatal("KernelVersion accepted a file that is not a bzImage")
	}
}

// qemuVM is a VM for kernel with kwatch's initramfs, and the SSH client
// config that logs in to it as root with a fresh key, pinning the host key.
func qemuVM(t *testing.T, kernel, modulesDir, accel string) (*Process, *ssh.ClientConfig) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := EnsureHostKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	// The host keys are created once: a second call must keep them.
	keys, _ := filepath.Glob(filepath.Join(stateDir, "dropbear_*_host_key"))
	if len(keys) != 2 {
		t.Fatalf("EnsureHostKey wrote %v, want an ed25519 and an RSA key", keys)
	}
	before := readFiles(t, keys)
	if again, err := EnsureHostKey(stateDir); err != nil || again != hostKey {
		t.Fatalf("EnsureHostKey again = %q, %v", again, err)
	}
	if readFiles(t, keys) != before {
		t.Fatal("EnsureHostKey replaced an existing host key")
	}
	// Whichever key the client negotiates must be one of ours.
	var hostKeys []ssh.PublicKey
	for _, k := range keys {
		out, err := exec.Command("dropbearkey", "-y", "-f", k).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l)); err == nil {
				hostKeys = append(hostKeys, pub)
			}
		}
	}
	hostKeyCallback := func(_ string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range hostKeys {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return fmt.Errorf("guest presented an unknown %s host key", key.Type())
	}
	initrd := filepath.Join(stateDir, "initramfs.cpio.gz")
	err = WriteInitramfs(initrd, InitramfsConfig{
		AuthorizedKey: ssh.MarshalAuthorizedKey(signer.PublicKey()),
		HostKey:       hostKey,
		ModulesDir:    modulesDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	v := &Process{
		StateDir: stateDir,
		Kind:     guest.QEMU,
		Ident:    "first",
		Launch:   QEMUConfig{Kernel: kernel, Initramfs: initrd, ModulesDir: modulesDir}.Launcher(),
		Accel:    accel,
		Notify:   func(msg string) { t.Logf("notice: %s", msg) },
	}
	t.Cleanup(func() {
		if err := v.Down(); err != nil {
			t.Error(err)
		}
	})
	return v, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeyCallback,
		Timeout:         30 * time.Second,
	}
}

func readFiles(t *testing.T, files []string) string {
	t.Helper()
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return string(all)
}

func qemuUp(t *testing.T, v *Process) State {
	t.Helper()
	start := time.Now()
	st, err := v.Up(context.Background(), 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Up (%s) took %s", v.Ident, time.Since(start).Round(100*time.Millisecond))
	if !proc.Alive(st.PID) {
		t.Fatalf("Up returned a dead VM (pid %d)", st.PID)
	}
	return st
}

// guestRun logs in with cfg and runs cmd in the guest.
func guestRun(t *testing.T, st State, cfg *ssh.ClientConfig, cmd string) string {
	t.Helper()
	c, err := ssh.Dial("tcp", "127.0.0.1:"+strconv.Itoa(st.Port), cfg)
	if err != nil {
		t.Fatalf("ssh login: %v", err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("guest %q: %v: %s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestQEMUDebianKernel boots each installed Debian kernel series (6.1 with
// plain modules, 6.12 with .ko.xz) with kwatch's initramfs.
func TestQEMUDebianKernel(t *testing.T) {
	for _, k := range debianKernels() {
		t.Run(k.series, func(t *testing.T) { testQEMUDebianKernel(t, k.image, k.release, k.modules) })
	}
}

func testQEMUDebianKernel(t *testing.T, image, release, modules string) {
	v, cfg := qemuVM(t, image, modules, "tcg")
	st := qemuUp(t, v)
	if st.Accel != "tcg" || st.Kind != guest.QEMU || st.Ident != "first" {
		t.Errorf("state = %+v", st)
	}
	if got := guestRun(t, st, cfg, "uname -r"); got != release {
		t.Errorf("guest uname -r = %q", got)
	}
	// The kernel's modules are there for modprobe, decompressed as needed:
	// a module nothing loaded yet, and one whose dependency must load first.
	if got := guestRun(t, st, cfg, "modprobe dummy && modprobe videodev && ls -d /sys/module/dummy /sys/module/videodev /sys/module/mc"); got != "/sys/module/dummy\n/sys/module/mc\n/sys/module/videodev" {
		t.Errorf("after modprobe in the guest, ls /sys/module says %q", got)
	}

	c, err := ssh.Dial("tcp", "127.0.0.1:"+strconv.Itoa(st.Port), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatalf("sftp subsystem: %v", err)
	}
	want := strings.Repeat("kwatch sftp\n", 10000)
	f, err := sc.Create("/tmp/hello")
	if err == nil {
		_, err = f.Write([]byte(want))
		f.Close()
	}
	if err != nil {
		t.Fatalf("sftp write: %v", err)
	}
	sum := fmt.Sprintf("%x", md5.Sum([]byte(want)))
	if got := guestRun(t, st, cfg, "md5sum </tmp/hello"); !strings.HasPrefix(got, sum) {
		t.Errorf("guest md5sum of the uploaded file = %s, want %s", got, sum)
	}
	f, err = sc.Open("/tmp/hello")
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	if _, err := f.WriteTo(&got); err != nil || got.String() != want {
		t.Fatalf("sftp read back %d bytes (%v), want %d", got.Len(), err, len(want))
	}
	sc.Close()
	c.Close()

	if again := qemuUp(t, v); again.PID != st.PID || again.Port != st.Port {
		t.Fatalf("second Up with the same Ident started a new VM: %+v, was %+v", again, st)
	}
	v.Ident = "second"
	next := qemuUp(t, v)
	if next.PID == st.PID || proc.Alive(st.PID) {
		t.Fatalf("Up with a new Ident kept the old VM (pid %d, new %d)", st.PID, next.PID)
	}
	if got := guestRun(t, next, cfg, "hostname"); got != "kwatch" {
		t.Errorf("guest hostname = %q", got)
	}
	if err := v.Down(); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(next.PID) {
		t.Fatalf("VM process %d is alive after Down", next.PID)
	}
	if _, running, err := v.Status(); running || err != nil {
		t.Fatalf("Status after Down = %v, %v", running, err)
	}
}

// The Rust-enabled test kernel from scripts/rust-kernel.sh has e1000 built in.
func TestQEMURustKernel(t *testing.T) {
	done, _ := filepath.Glob(filepath.Join(os.Getenv("HOME"), ".cache/kwatch/rust-kernel/*/done"))
	if len(done) == 0 {
		t.Skip("the Rust kernel is not built yet (scripts/rust-kernel.sh)")
	}
	kernel := filepath.Join(filepath.Dir(done[0]), "linux/arch/x86/boot/bzImage")
	v, cfg := qemuVM(t, kernel, "", "tcg")
	st := qemuUp(t, v)
	ver, err := KernelVersion(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if got := guestRun(t, st, cfg, "uname -r"); got != ver {
		t.Errorf("guest uname -r = %q, want %q", got, ver)
	}
}

// On hosts where a KVM guest hangs silently or QEMU dies under KVM (both seen
// on kwatch's nested-virtualisation machines), "auto" must fall back to TCG
// with a notice; elsewhere it simply uses KVM.
func TestQEMUAutoAccel(t *testing.T) {
	v, cfg := qemuVM(t, debianKernel, debianModules, "auto")
	var notices []string // the fallback's, not the "booting the VM" ones
	v.Notify = func(msg string) {
		if !strings.HasPrefix(msg, "booting the VM") {
			notices = append(notices, msg)
		}
	}
	st := qemuUp(t, v)
	t.Logf("accel %s, notices %q", st.Accel, notices)
	want := "tcg"
	if kvmUsable() && len(notices) == 0 {
		want = "kvm"
	}
	if st.Accel != want {
		t.Errorf("auto booted with %s (notices %q), want %s", st.Accel, notices, want)
	}
	if st.Accel == "tcg" && kvmUsable() && (len(notices) != 1 || !regexp.MustCompile(`^kvm: [^\n]+, falling back to tcg$`).MatchString(notices[0])) {
		t.Errorf("notices = %q, want one about falling back to tcg", notices)
	}
	if got := guestRun(t, st, cfg, "uname -r"); got != debianRelease {
		t.Errorf("guest uname -r = %q", got)
	}
}

func TestCompareVersions(t *testing.T) {
	sorted := []string{
		"vmlinuz-5.10.0-9-amd64",
		"vmlinuz-6.1.0-9-amd64",
		"vmlinuz-6.1.0-10-amd64",
		"vmlinuz-6.1.0-57-amd64",
		"vmlinuz-6.12.48+deb12-amd64",
		"vmlinuz-6.12.57+deb12-amd64",
	}
	for i := range sorted {
		for j := range sorted {
			if got, want := compareVersions(sorted[i], sorted[j]), cmp.Compare(i, j); got != want {
				t.Errorf("compareVersions(%s, %s) = %d, want %d", sorted[i], sorted[j], got, want)
			}
		}
	}
}

func TestSeries(t *testing.T) {
	for _, c := range []struct{ release, want string }{
		{"6.1.0-57-amd64", "6.1"},
		{"6.12.118+deb12-amd64", "6.12"},
		{"6.1.192", "6.1"},
		{"6.18", "6.18"},
		{"custom", "custom"},
		{"6.x", "6.x"},
	} {
		if got := Series(c.release); got != c.want {
			t.Errorf("Series(%q) = %q, want %q", c.release, got, c.want)
		}
	}
}

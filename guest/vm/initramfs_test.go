package vm

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestWriteInitramfs(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio(1) not installed")
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "dropbear_ed25519_host_key")
	for _, typ := range []string{"ed25519", "rsa"} {
		if err := os.WriteFile(filepath.Join(dir, "dropbear_"+typ+"_host_key"), []byte(typ+" key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "initramfs.cpio.gz")
	cfg := InitramfsConfig{AuthorizedKey: []byte("ssh-ed25519 AAAA test\n"), HostKey: hostKey, ModulesDir: debianModules}
	if err := WriteInitramfs(path, cfg); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	list := cpioList(t, archive)
	for _, tc := range []struct{ name, want string }{
		{"init", `^-rwxr-xr-x `},
		{"dev/console", `^crw------- .* 5,\s+1 `},
		{"dev/null", `^crw-rw-rw- .* 1,\s+3 `},
		{"bin/busybox", `^-rwxr-xr-x `},
		{"bin/sh", `-> busybox$`},
		{"usr/sbin/dropbear", `^-rwxr-xr-x `},
		{"usr/lib/sftp-server", `^-rwxr-xr-x `},
		{"lib64/ld-linux-x86-64.so.2", `^-rwxr-xr-x `},
		{"lib/x86_64-linux-gnu/libtomcrypt.so.1", `^-rwxr-xr-x `},
		{"lib/x86_64-linux-gnu/libc.so.6", `^-rwxr-xr-x `},
		{"root", `^drwx------ `},
		{"root/.ssh", `^drwx------ `},
		{"root/.ssh/authorized_keys", `^-rw------- `},
		{"etc/dropbear/dropbear_ed25519_host_key", `^-rw------- `},
		{"etc/dropbear/dropbear_rsa_host_key", `^-rw------- `},
		{"etc/passwd", `^-rw-r--r-- `},
		{"etc/shells", `^-rw-r--r-- `},
		{"lib/kwatch/e1000.ko", `^-rw-r--r-- `},
		{"lib/kwatch/9p.ko", `^-rw-r--r-- `},
		{"usr/bin/kmod", `^-rwxr-xr-x `},
		{"sbin/modprobe", `-> /usr/bin/kmod$`},
		{"lib/x86_64-linux-gnu/liblzma.so.5", `^-rwxr-xr-x `},
	} {
		if l := findEntry(t, list, tc.name); !regexp.MustCompile(tc.want).MatchString(l) {
			t.Errorf("%s: cpio lists %q, want it to match %s", tc.name, l, tc.want)
		}
	}
	// The kernel creates entries in archive order, so every parent must come first.
	seen := map[string]bool{}
	for _, l := range list {
		f := strings.Fields(l)
		name := f[len(f)-1]
		if i := indexOf(f, "->"); i > 0 {
			name = f[i-1]
		}
		if d := filepath.Dir(name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", name, d)
		}
		seen[name] = true
	}

	out := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet", "init", "root/.ssh/authorized_keys", "etc/dropbear/*")
	cmd.Dir = out
	cmd.Stdin = bytes.NewReader(archive)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, b)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "root/.ssh/authorized_keys")); string(b) != "ssh-ed25519 AAAA test\n" {
		t.Errorf("authorized_keys = %q", b)
	}
	for _, typ := range []string{"ed25519", "rsa"} {
		if b, _ := os.ReadFile(filepath.Join(out, "etc/dropbear/dropbear_"+typ+"_host_key")); string(b) != typ+" key" {
			t.Errorf("guest's %s host key = %q", typ, b)
		}
	}
	init, _ := os.ReadFile(filepath.Join(out, "init"))
	for _, want := range []string{"insmod \"$m\"", "for m in /lib/kwatch/e1000.ko ", "mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose kwatch-modules", "dropbear -r /etc/dropbear/dropbear_ed25519_host_key -r /etc/dropbear/dropbear_rsa_host_key -p 22 -s -g", "mount -t devtmpfs"} {
		if !strings.Contains(string(init), want) {
			t.Errorf("/init lacks %q:\n%s", want, init)
		}
	}
}

func TestWriteInitramfsRejectsDynamicBusybox(t *testing.T) {
	dir := t.TempDir()
	cfg := InitramfsConfig{AuthorizedKey: []byte("k"), HostKey: "/etc/hostname", Busybox: "/usr/sbin/dropbear"}
	err := WriteInitramfs(filepath.Join(dir, "i"), cfg)
	if err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Fatalf("WriteInitramfs with a dynamic busybox = %v, want an error naming busybox-static", err)
	}
}

func TestModuleFiles(t *testing.T) {
	fake := func(dep, builtin string) string {
		d := t.TempDir()
		for name, data := range map[string]string{"modules.dep": dep, "modules.builtin": builtin} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	nodeps := fake("kernel/net/core/failover.ko:\nkernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n", "")
	withDeps := fake("kernel/e1000/e1000.ko: kernel/b.ko kernel/a.ko\nkernel/b.ko: kernel/a.ko\nkernel/a.ko:\n", "")
	ninep := fake("kernel/e1000.ko.xz:\nkernel/9p.ko.xz: kernel/netfs.ko.xz kernel/9pnet.ko.xz\nkernel/9pnet_virtio.ko.xz: kernel/9pnet.ko.xz\nkernel/9pnet.ko.xz:\nkernel/netfs.ko.xz:\n",
		"kernel/drivers/virtio/virtio_pci.ko\n")
	partial := fake("kernel/e1000.ko:\nkernel/9p.ko: kernel/9pnet.ko\nkernel/9pnet_virtio.ko: kernel/9pnet.ko\nkernel/virtio_pci.ko:\n", "")
	for _, tc := range []struct {
		name      string
		dir       string
		want      []string
		wantShare bool
		wantErr   string
	}{
		{name: "deps load first", dir: withDeps, want: []string{withDeps + "/kernel/a.ko", withDeps + "/kernel/b.ko", withDeps + "/kernel/e1000/e1000.ko"}},
		{name: "built in", dir: nodeps, want: nil},
		{name: "9p, compressed, virtio_pci built in", dir: ninep, wantShare: true, want: []string{ninep + "/kernel/e1000.ko.xz", ninep + "/kernel/9pnet.ko.xz", ninep + "/kernel/9pnet_virtio.ko.xz", ninep + "/kernel/netfs.ko.xz", ninep + "/kernel/9p.ko.xz"}},
		{name: "9p incomplete: the guest boots without the share", dir: partial, want: []string{partial + "/kernel/e1000.ko"}},
		{name: "no modules.dep", dir: t.TempDir(), wantErr: "run depmod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, share, err := moduleFiles(tc.dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("moduleFiles = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) || share != tc.wantShare {
				t.Fatalf("moduleFiles = %v, share %v; want %v, share %v", got, share, tc.want, tc.wantShare)
			}
		})
	}
}

package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"kwatch/kmod"
	"kwatch/proc"
	"kwatch/statedir"

	"golang.org/x/crypto/ssh"
)

// InitramfsConfig says what goes into the initramfs kwatch boots a plain
// kernel image with: busybox, dropbear and sftp-server from the host.
type InitramfsConfig struct {
	AuthorizedKey []byte // OpenSSH authorized_keys line for root
	HostKey       string // path to the dropbear ed25519 host key from EnsureHostKey (its RSA key beside it goes in too)
	ModulesDir    string // /lib/modules/<version>: the NIC driver and 9p load from it at boot, and the guest mounts it (QEMUConfig.ModulesDir); "" = the kernel has the NIC built in and no modules
	Modprobe      string // "" = /usr/bin/kmod (modprobe in the guest, for the modules dir it mounts)
	Busybox       string // "" = /usr/bin/busybox (must be static)
	Dropbear      string // "" = /usr/sbin/dropbear
	SFTPServer    string // "" = /usr/lib/openssh/sftp-server (goes to /usr/lib/sftp-server in the guest, where dropbear looks)
}

// The boot modules the guest's init loads from the initramfs, any of them
// possibly built in: the network driver (QEMU's -nic model=e1000), without
// which the guest is unreachable, and what mounts the kernel's modules
// directory from the host (9p over virtio-pci), without which only modprobe
// is missing.
var (
	nicModules   = []string{NICModule}
	shareModules = []string{"virtio_pci", "9pnet_virtio", "9p"}
)

// NICModule is the guest's network driver, for QEMU's -nic model=e1000.
const NICModule = "e1000"

// ModulesDir is the modules directory --vm qemu shares with a guest running
// kernel release: /lib/modules/<release> when it holds modules, "" when it
// does not (a kernel with its NIC built in, like the Rust test kernel, needs none).
func ModulesDir(release string) string {
	dir := filepath.Join("/lib/modules", release)
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err != nil {
		return ""
	}
	return dir
}

// guestBootDir holds the boot modules in the guest, decompressed: insmod
// (busybox's) and old kernels take plain ELF only.
const guestBootDir = "lib/kwatch"

// ModulesTag is the 9p mount tag of the modules directory shared with the guest.
const ModulesTag = "kwatch-modules"

// initScript is the guest's PID 1. It must never exit (that panics the
// kernel), so after starting dropbear it sleeps forever; `reboot -f` ends it.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in %s; do insmod "$m"; done
if [ -n "%s" ]; then
	# The kernel's modules, read-only from the host: modprobe and request_module work.
	d=/lib/modules/$(uname -r)
	mkdir -p "$d" && mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose %[2]s "$d" ||
		echo "kwatch-guest: mounting the modules directory failed"
fi
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname kwatch
dropbear -r /etc/dropbear/%s -r /etc/dropbear/%s -p 22 -s -g
echo "kwatch-guest: ssh ready"
while :; do sleep 3600; done
`

// WriteInitramfs writes a gzip-compressed newc initramfs to path that boots
// into dropbear with cfg.AuthorizedKey allowed to log in as root.
func WriteInitramfs(path string, cfg InitramfsConfig) error {
	t, err := initramfsTree(cfg)
	if err != nil {
		return fmt.Errorf("assembling the initramfs: %w", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := writeCPIO(zw, t.entries()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compressing the initramfs: %w", err)
	}
	// Written aside and renamed, so a VM booting right now never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	return nil
}

// CheckHost says whether this host has what the initramfs is made of: a
// static busybox, dropbear, sftp-server and kmod, each error naming the
// Debian package to install.
func (cfg InitramfsConfig) CheckHost() error {
	busybox := orDefault(cfg.Busybox, "/usr/bin/busybox")
	if _, needed, err := readELFDeps(busybox); err != nil {
		return fmt.Errorf("%w: install busybox-static", err)
	} else if len(needed) > 0 {
		return fmt.Errorf("%s is not static (it needs %s): install busybox-static", busybox, strings.Join(needed, ", "))
	}
	for _, p := range []struct{ path, pkg string }{
		{orDefault(cfg.Dropbear, "/usr/sbin/dropbear"), "dropbear-bin"},
		{orDefault(cfg.SFTPServer, "/usr/lib/openssh/sftp-server"), "openssh-sftp-server"},
		{orDefault(cfg.Modprobe, "/usr/bin/kmod"), "kmod"},
	} {
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("%s not found: install %s", p.path, p.pkg)
		}
	}
	return nil
}

func initramfsTree(cfg InitramfsConfig) (tree, error) {
	busybox := orDefault(cfg.Busybox, "/usr/bin/busybox")
	dropbear := orDefault(cfg.Dropbear, "/usr/sbin/dropbear")
	sftp := orDefault(cfg.SFTPServer, "/usr/lib/openssh/sftp-server")
	if len(cfg.AuthorizedKey) == 0 || cfg.HostKey == "" {
		return nil, errors.New("the initramfs needs both an authorized key for root and a host key")
	}
	if err := cfg.CheckHost(); err != nil {
		return nil, err
	}
	t := tree{}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "sbin", "usr/bin", "usr/sbin", "etc/dropbear"} {
		t.dir(d, 0o755)
	}
	t.dir("root", 0o700)
	t.dir("root/.ssh", 0o700)
	t.add(cpioEntry{Name: "dev/console", Mode: modeCharDev | 0o600, Major: 5, Minor: 1})
	t.add(cpioEntry{Name: "dev/null", Mode: modeCharDev | 0o666, Major: 1, Minor: 3})
	t.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:\n"))
	t.file("etc/shells", 0o644, []byte("/bin/sh\n"))
	key := bytes.TrimSpace(cfg.AuthorizedKey)
	t.file("root/.ssh/authorized_keys", 0o600, append(key, '\n'))
	t.add(cpioEntry{Name: "bin/sh", Mode: modeSymlink | 0o777, Data: []byte("busybox")})

	var boot []string
	tag := ""
	copies := map[string]string{ // guest path -> host path
		"bin/busybox":         busybox,
		"usr/sbin/dropbear":   dropbear,
		"usr/lib/sftp-server": sftp,
	}
	bins := []string{dropbear, sftp}
	if cfg.ModulesDir != "" {
		mods, share, err := moduleFiles(cfg.ModulesDir)
		if err != nil {
			return nil, err
		}
		for _, m := range mods {
			name := path.Join(guestBootDir, kmod.Base(m)+".ko")
			data, err := kmod.Read(m)
			if err != nil {
				return nil, err
			}
			t.file(name, 0o644, data)
			boot = append(boot, "/"+name)
		}
		// kmod's modprobe (busybox's cannot read .ko.zst): /sbin/modprobe is
		// where the kernel's request_module runs it. busybox --install leaves
		// a name that exists alone.
		modprobe := orDefault(cfg.Modprobe, "/usr/bin/kmod")
		copies["usr/bin/kmod"] = modprobe
		bins = append(bins, modprobe)
		t.add(cpioEntry{Name: "sbin/modprobe", Mode: modeSymlink | 0o777, Data: []byte("/usr/bin/kmod")})
		if share {
			tag = ModulesTag
		}
	}
	t.file("init", 0o755, []byte(fmt.Sprintf(initScript, strings.Join(boot, " "), tag, hostKeyName("ed25519"), hostKeyName("rsa"))))

	for _, typ := range hostKeyTypes {
		host := filepath.Join(filepath.Dir(cfg.HostKey), hostKeyName(typ))
		if typ == "ed25519" {
			host = cfg.HostKey
		}
		if err := t.hostFile("etc/dropbear/"+hostKeyName(typ), 0o600, host); err != nil {
			return nil, err
		}
	}
	for _, bin := range bins {
		libs, err := elfDeps(bin)
		if err != nil {
			return nil, err
		}
		for _, lib := range libs {
			copies[strings.TrimPrefix(lib, "/")] = lib
		}
	}
	for name, host := range copies {
		if err := t.hostFile(name, 0o755, host); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// moduleFiles returns the files of the boot modules and the modules they
// need, in load order, and whether the modules directory can be shared (the
// kernel has 9p, built in or in modulesDir complete with what it needs).
func moduleFiles(modulesDir string) (files []string, share bool, err error) {
	x, err := kmod.ReadIndex(modulesDir)
	if err != nil {
		return nil, false, err
	}
	present := func(mods []string) (have []string, all bool) {
		for _, m := range mods {
			if x.Has(m) {
				have = append(have, m)
			}
		}
		return have, len(have) == len(mods)
	}
	nics, _ := present(nicModules)
	p, err := x.Resolve(nics, nil, nil)
	if err != nil {
		return nil, false, fmt.Errorf("the network driver of %s: %w", modulesDir, err)
	}
	load := p.Load
	if ninep, all := present(shareModules); all {
		done := map[string]bool{}
		for _, m := range load {
			done[m] = true
		}
		if p, err := x.Resolve(ninep, nil, done); err == nil {
			load, share = append(load, p.Load...), true
		}
	}
	for _, m := range load {
		files = append(files, filepath.Join(modulesDir, x.Path(m)))
	}
	return files, share, nil
}

// hostKeyTypes are the dropbear host keys the guest gets. Dropbear 2022.83
// offers rsa-sha2-256 even without an RSA key and aborts the connection when
// a client picks it, which Go's x/crypto/ssh does: so an RSA key is needed too.
var hostKeyTypes = []string{"ed25519", "rsa"}

func hostKeyName(typ string) string { return "dropbear_" + typ + "_host_key" }

// EnsureHostKey creates the guest's dropbear host keys in stateDir once, so
// the guest keeps the same host keys across boots and kwatch can pin them. It
// returns the ed25519 key's path; the RSA key lies beside it.
func EnsureHostKey(stateDir string) (string, error) {
	if err := statedir.Create(stateDir); err != nil {
		return "", err
	}
	for _, typ := range hostKeyTypes {
		p := filepath.Join(stateDir, hostKeyName(typ))
		if _, err := os.Stat(p); err == nil {
			continue
		}
		var out bytes.Buffer
		cmd := exec.Command("dropbearkey", "-t", typ, "-f", p)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := proc.Run(context.Background(), cmd); err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				return "", errors.New("dropbearkey not found: install dropbear-bin")
			}
			return "", fmt.Errorf("creating the guest's %s host key with dropbearkey: %w: %s", typ, err, strings.TrimSpace(out.String()))
		}
	}
	return filepath.Join(stateDir, hostKeyName("ed25519")), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// tree is the initramfs being assembled, by guest path (no leading slash).
type tree map[string]cpioEntry

func (t tree) add(e cpioEntry) {
	for d := path.Dir(e.Name); d != "."; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t[d] = cpioEntry{Name: d, Mode: modeDir | 0o755}
		}
	}
	t[e.Name] = e
}

func (t tree) dir(name string, perm uint32) { t.add(cpioEntry{Name: name, Mode: modeDir | perm}) }

func (t tree) file(name string, perm uint32, data []byte) {
	t.add(cpioEntry{Name: name, Mode: modeFile | perm, Data: data})
}

// hostFile copies a host file (following symlinks) into the tree.
func (t tree) hostFile(name string, perm uint32, host string) error {
	data, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("reading %s for the initramfs: %w", host, err)
	}
	t.file(name, perm, data)
	return nil
}

// entries lists the tree sorted by name, which puts every directory before its contents.
func (t tree) entries() []cpioEntry {
	es := make([]cpioEntry, 0, len(t))
	for _, e := range t {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	return es
}

// HostPublicKeys returns the public halves of the host keys EnsureHostKey
// made in stateDir: a VM booted with them must present one of them, which
// pins exactly that key (SSHConfig.HostKeys) whatever port it answers on.
func HostPublicKeys(stateDir string) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for _, typ := range hostKeyTypes {
		p := filepath.Join(stateDir, hostKeyName(typ))
		var out, errOut bytes.Buffer
		cmd := exec.Command("dropbearkey", "-y", "-f", p)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := proc.Run(context.Background(), cmd); err != nil {
			return nil, fmt.Errorf("reading the guest's host key %s: %w: %s", p, err, bytes.TrimSpace(errOut.Bytes()))
		}
		// dropbearkey prints a header, then the key in authorized_keys format.
		for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
			if k, _, _, _, err := ssh.ParseAuthorizedKey(line); err == nil {
				keys = append(keys, k)
				break
			}
		}
	}
	if len(keys) != len(hostKeyTypes) {
		return nil, fmt.Errorf("dropbearkey -y printed no public key for the host keys in %s", stateDir)
	}
	return keys, nil
}

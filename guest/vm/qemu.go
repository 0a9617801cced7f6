package vm

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// KernelParams go on every guest kernel's command line: the kernel log on the
// serial console (kwatch reads it for crashes even when SSH is gone), at every
// level; a panic that ends the VM instead of hanging it; a log buffer large
// enough that a module printing tens of thousands of lines at once is not
// overwritten before kwatch reads it; /dev/kmsg writable for kwatch's markers.
const KernelParams = "console=ttyS0 loglevel=7 panic=-1 printk.devkmsg=on log_buf_len=8M"

// QEMUConfig describes the VM of `--vm qemu`: a kernel image booted with
// kwatch's own initramfs.
type QEMUConfig struct {
	Kernel    string // bzImage/vmlinuz
	Initramfs string // path written by WriteInitramfs
	MemoryMB  int    // 0 = 512
	Append    string // extra kernel cmdline
	GDBSocket string // QEMU's gdbstub listens here (GDBSocket); "" = no gdbstub
	// ModulesDir is shared read-only with the guest, which mounts it as its
	// /lib/modules/<release> (InitramfsConfig.ModulesDir); "" = none.
	ModulesDir string
}

// Launcher returns the Launcher that boots c under qemu-system-x86_64.
func (c QEMUConfig) Launcher() Launcher {
	return func(port int, accel string) (*exec.Cmd, error) {
		qemu, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, errors.New("qemu-system-x86_64 not found: install qemu-system-x86")
		}
		for _, f := range []string{c.Kernel, c.Initramfs} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("booting the VM: %w", err)
			}
		}
		args := c.args(port, accel)
		if c.GDBSocket != "" {
			gdb, err := GDBArgs(c.GDBSocket)
			if err != nil {
				return nil, err
			}
			args = append(args, gdb...)
		}
		return exec.Command(qemu, args...), nil
	}
}

func (c QEMUConfig) args(port int, accel string) []string {
	cpu := "max" // -cpu host needs KVM
	if accel == "kvm" {
		cpu = "host"
	}
	mem := c.MemoryMB
	if mem == 0 {
		mem = 512
	}
	cmdline := strings.TrimSpace(KernelParams + " " + c.Append)
	args := []string{
		"-accel", accel, "-cpu", cpu, "-m", strconv.Itoa(mem), "-smp", "1",
		"-kernel", c.Kernel, "-initrd", c.Initramfs, "-append", cmdline,
		// With panic=-1 a kernel panic reboots, and -no-reboot turns that into QEMU exiting.
		"-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none",
		// Bound to 127.0.0.1 only: the guest lets root in with kwatch's key, nobody else should reach it.
		"-nic", fmt.Sprintf("user,model=e1000,hostfwd=tcp:127.0.0.1:%d-:22", port),
	}
	if c.ModulesDir != "" {
		// QEMU's option parser takes ',' as a separator: a path holding one is doubled.
		dir := strings.ReplaceAll(c.ModulesDir, ",", ",,")
		args = append(args, "-virtfs", "local,path="+dir+",mount_tag="+ModulesTag+",security_model=none,readonly=on")
	}
	return args
}

// KernelVersion reads the release (such as "6.1.0-56-amd64") from an x86
// bzImage's setup header, so the matching /lib/modules dir can be found.
func KernelVersion(kernelImage string) (string, error) {
	f, err := os.Open(kernelImage)
	if err != nil {
		return "", fmt.Errorf("reading the kernel version: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("reading the setup header of %s: %w", kernelImage, err)
	}
	// The boot protocol's "HdrS" magic at 0x202; kernel_version at 0x20e points
	// to the version string, relative to the end of the 0x200-byte boot sector.
	ptr := binary.LittleEndian.Uint16(hdr[0x20e:])
	if string(hdr[0x202:0x206]) != "HdrS" || ptr == 0 {
		return "", fmt.Errorf("%s is not an x86 bzImage with a version string", kernelImage)
	}
	ver := make([]byte, 256)
	n, err := f.ReadAt(ver, int64(ptr)+0x200)
	if n == 0 {
		return "", fmt.Errorf("reading the version string of %s: %w", kernelImage, err)
	}
	ver, _, _ = bytes.Cut(ver[:n], []byte{0})
	fields := strings.Fields(string(ver))
	if len(fields) == 0 {
		return "", fmt.Errorf("%s has an empty version string", kernelImage)
	}
	return fields[0], nil
}

// Kernels returns the installed kernel images (/boot/vmlinuz-*), oldest
// first by version: 6.1.0-9 before 6.1.0-10, 6.1 before 6.12.
func Kernels() []string {
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	slices.SortFunc(imgs, compareVersions)
	return imgs
}

// NewestKernel returns the newest installed kernel image, or "" when there
// is none: kwatch's default --kernel, and the one the tests boot.
func NewestKernel() string {
	imgs := Kernels()
	if len(imgs) == 0 {
		return ""
	}
	return imgs[len(imgs)-1]
}

// NewestOfEachSeries returns the newest installed kernel image of each
// series (6.1, 6.12, ...), oldest series first.
func NewestOfEachSeries() []string {
	var imgs []string
	last := ""
	for _, img := range Kernels() { // oldest first
		series := Series(strings.TrimPrefix(filepath.Base(img), "vmlinuz-"))
		if n := len(imgs); n > 0 && series == last {
			imgs[n-1] = img // a newer build of the same series
			continue
		}
		imgs, last = append(imgs, img), series
	}
	return imgs
}

// Series returns a kernel release's major.minor ("6.12" for
// "6.12.118+deb12-amd64"), or the release itself when it has no such prefix.
func Series(release string) string {
	major, rest, ok := strings.Cut(release, ".")
	if !ok || digits(major) != len(major) || major == "" {
		return release
	}
	if n := digits(rest); n > 0 {
		return major + "." + rest[:n]
	}
	return release
}

// compareVersions orders strings as sort -V does: runs of digits by value,
// everything else byte by byte.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

package machine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"kwatch/builder"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
)

// bootKernel is the kernel a --vm qemu guest boots.
type bootKernel struct {
	image      string
	info       os.FileInfo
	modulesDir string
}

// qemuKernel checks --kernel (default: the newest installed) and
// --modules-dir (default: the kernel's own, when it has modules).
func qemuKernel(o Options) (bootKernel, error) {
	k := bootKernel{image: o.Kernel, modulesDir: o.ModulesDir}
	if k.image == "" {
		if k.image = vm.NewestKernel(); k.image == "" {
			return k, inputf("install a kernel image (apt-get install linux-image-amd64) or pass --kernel PATH", "no kernel image found in /boot")
		}
	}
	var err error
	if k.info, err = os.Stat(k.image); err != nil {
		return k, inputf("pass --kernel with a bzImage/vmlinuz path", "kernel image %s: %v", k.image, errors.Unwrap(err))
	}
	ver, err := vm.KernelVersion(k.image)
	if err != nil {
		return k, inputf("pass --kernel with a bzImage/vmlinuz path", "--kernel: %v", err)
	}
	if k.modulesDir == "" {
		if k.modulesDir = vm.ModulesDir(ver); k.modulesDir == "" {
			// A kernel with its NIC driver built in (like the Rust test kernel) has
			// no modules dir; one whose configuration beside it says the driver is
			// a module lacks its modules.
			if config, err := os.ReadFile(filepath.Join(filepath.Dir(k.image), "config-"+ver)); err == nil && builder.ParseKconfig(config)["CONFIG_"+strings.ToUpper(vm.NICModule)] == "m" {
				return k, inputf("install linux-image-"+ver+" (its modules), or pass --modules-dir", "kernel %s has no modules in /lib/modules/%s/kernel, and its network driver is a module", k.image, ver)
			}
		}
	} else if _, err := os.Stat(k.modulesDir); err != nil {
		return k, inputf("pass the /lib/modules/<version> dir of the kernel image", "--modules-dir %s does not exist", k.modulesDir)
	}
	return k, nil
}

// qemuVM is a VM that boots a host kernel with an initramfs kwatch writes:
// its SSH server uses host keys kwatch made, and kwatch's key logs in.
func qemuVM(o Options, notify func(string)) (*vm.Process, error) {
	k, err := qemuKernel(o)
	if err != nil {
		return nil, err
	}
	_, authKey, err := ssh.LoadOrCreateKey(o.StateDir)
	if err != nil {
		return nil, err
	}
	hostKey, err := vm.EnsureHostKey(o.StateDir)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(o.StateDir, "initramfs.cpio.gz")
	qc := vm.QEMUConfig{Kernel: k.image, Initramfs: initrd, GDBSocket: vm.GDBSocket(o.StateDir), ModulesDir: k.modulesDir}
	launch := qc.Launcher()
	return &vm.Process{
		StateDir: o.StateDir,
		Kind:     guest.QEMU,
		Kernel:   k.image,
		Ident:    gdbIdent(o.StateDir, fmt.Sprintf("%s %d %d %s shared", k.image, k.info.Size(), k.info.ModTime().Unix(), k.modulesDir), notify),
		Accel:    o.Accel,
		Notify:   notify,
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			// The initramfs is only needed when booting, so it is written here.
			err := vm.WriteInitramfs(initrd, vm.InitramfsConfig{AuthorizedKey: authKey, HostKey: hostKey, ModulesDir: k.modulesDir})
			if err != nil {
				return nil, fmt.Errorf("writing the initramfs: %w", err)
			}
			return launch(port, accel)
		},
	}, nil
}

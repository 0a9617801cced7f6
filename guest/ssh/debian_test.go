package ssh

import "kwatch/guest/vm/vmtest"

// The Debian kernel these tests boot: the newest build of Debian 12's own 6.1
// series (vmtest finds it; no test names an ABI version).
var debianKernel, debianRelease, debianModules = installedKernel()

func installedKernel() (image, release, modules string) {
	k := vmtest.Oldest()
	return k.Image, k.Release, k.Modules
}

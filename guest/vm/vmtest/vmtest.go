// Package vmtest finds the Debian kernels that kwatch's end-to-end tests boot:
// the newest installed build of each kernel series (6.1, 6.12, ...), found the
// way kwatch finds its default, so that no test names an ABI version that
// Debian may replace (6.1.0-56 became -57 between two sessions).
package vmtest

import (
	"path/filepath"
	"strings"

	"kwatch/guest/vm"
)

// Kernel is one installed Debian kernel.
type Kernel struct {
	Name    string // the series, "6.1" or "6.12": a subtest's name
	Image   string // /boot/vmlinuz-RELEASE
	Release string // uname -r
	Modules string // /lib/modules/RELEASE
	Build   string // its Kbuild tree (headers), /lib/modules/RELEASE/build
}

// Debian returns the newest installed build of each kernel series, oldest
// series first; nil when no kernel is installed.
func Debian() []Kernel {
	var ks []Kernel
	for _, img := range vm.NewestOfEachSeries() {
		release := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		ks = append(ks, Kernel{
			Name:    vm.Series(release),
			Image:   img,
			Release: release,
			Modules: filepath.Join("/lib/modules", release),
			Build:   filepath.Join("/lib/modules", release, "build"),
		})
	}
	return ks
}

// Oldest returns the newest build of the oldest installed series (Debian
// 12's own 6.1), or a zero Kernel when none is installed.
func Oldest() Kernel {
	if ks := Debian(); len(ks) > 0 {
		return ks[0]
	}
	return Kernel{}
}

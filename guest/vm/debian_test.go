package vm

import (
	"path/filepath"
	"strings"
)

// The Debian kernel these tests boot: the newest build of the oldest series
// installed (Debian 12's own 6.1). vmtest cannot be used here (it imports
// vm); no test names an ABI version.
var debianKernel, debianRelease, debianModules = installedKernel()

func installedKernel() (image, release, modules string) {
	var series string
	for _, img := range Kernels() { // oldest first
		r := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if series != "" && Series(r) != series {
			break
		}
		series, image, release = Series(r), img, r
	}
	if image == "" {
		return "", "", ""
	}
	return image, release, filepath.Join("/lib/modules", release)
}

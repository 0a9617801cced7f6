package vm

import (
	"path/filepath"
	"strings"
)

// The Debian kernel most tests here boot: the newest build of the oldest
// series installed (Debian 12's own 6.1). No test names an ABI version:
// Debian replaces them (6.1.0-56 became -57).
var debianKernel, debianRelease, debianModules = installedKernel()

func installedKernel() (image, release, modules string) {
	ks := debianKernels()
	if len(ks) == 0 {
		return "", "", ""
	}
	return ks[0].image, ks[0].release, ks[0].modules
}

type kernelSeries struct{ series, image, release, modules string }

// debianKernels returns the newest build of each installed kernel series,
// oldest series first (what vmtest.Debian returns; tests in this package
// cannot import it).
func debianKernels() []kernelSeries {
	var ks []kernelSeries
	for _, img := range NewestOfEachSeries() {
		r := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		ks = append(ks, kernelSeries{Series(r), img, r, filepath.Join("/lib/modules", r)})
	}
	return ks
}

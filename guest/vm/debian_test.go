package vm

import (
	"path/filepath"
	"sort"
	"strings"
)

// The Debian kernel the tests boot: the newest installed one, found the way
// kwatch finds its default. Debian replaces its ABI version (6.1.0-56 became
// -57), so no test names one.
var debianKernel, debianRelease, debianModules = installedKernel()

func installedKernel() (image, release, modules string) {
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(imgs) == 0 {
		return "", "", ""
	}
	sort.Strings(imgs)
	image = imgs[len(imgs)-1]
	release = strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	return image, release, filepath.Join("/lib/modules", release)
}

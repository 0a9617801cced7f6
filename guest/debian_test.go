package guest

import (
	"path/filepath"
	"strings"

	"kwatch/guest/vm"
)

// The Debian kernel the tests boot: the newest installed one, found the way
// kwatch finds its default. Debian replaces its ABI version (6.1.0-56 became
// -57), so no test names one.
var debianKernel, debianRelease, debianModules = installedKernel()

func installedKernel() (image, release, modules string) {
	image = vm.NewestKernel()
	if image == "" {
		return "", "", ""
	}
	release = strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	return image, release, filepath.Join("/lib/modules", release)
}

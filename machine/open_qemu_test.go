package machine

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeImage writes a file with an x86 bzImage's setup header naming
// version, as vm.KernelVersion reads it.
func fakeImage(t *testing.T, path, version string) {
	t.Helper()
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x100)
	copy(img[0x300:], version+" (kwatch test)\x00")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A kernel image whose modules are not installed, and whose network driver
// its configuration says is a module, cannot reach the network: kwatch says
// which package brings its modules instead of booting a guest that never
// answers.
func TestQEMUKernelWithoutModules(t *testing.T) {
	const ver = "6.99.0-kwatch-test-amd64"
	boot := t.TempDir()
	img := filepath.Join(boot, "vmlinuz-"+ver)
	fakeImage(t, img, ver)
	for _, tt := range []struct {
		config string
		want   string // "" = no error: the driver is built in
	}{
		{"CONFIG_MODULES=y\nCONFIG_E1000=m\n", "install linux-image-" + ver},
		{"CONFIG_MODULES=y\nCONFIG_E1000=y\n", ""},
	} {
		if err := os.WriteFile(filepath.Join(boot, "config-"+ver), []byte(tt.config), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := qemuKernel(Options{Kernel: img})
		var ue *InputError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.config, err)
		case tt.want != "" && (!errors.As(err, &ue) || !strings.HasPrefix(ue.Fix, tt.want) || !strings.Contains(ue.Msg, "no modules in")):
			t.Errorf("%q: %v, want a usage error with the hint %q", tt.config, err, tt.want)
		}
	}
}

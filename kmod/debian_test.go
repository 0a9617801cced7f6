package kmod_test

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"

	"kwatch/guest/vm/vmtest"
	"kwatch/kmod"
)

// TestResolveDebian resolves videodev's dependencies from each installed
// Debian kernel's real modules directory (6.1: plain .ko; 6.12: .ko.xz).
func TestResolveDebian(t *testing.T) {
	ks := vmtest.Debian()
	if len(ks) == 0 {
		t.Skip("no Debian kernel installed: run scripts/setup.sh")
	}
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			x, err := kmod.ReadIndex(k.Modules)
			if err != nil {
				t.Fatal(err)
			}
			p, err := x.Resolve([]string{"videodev"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"mc", "videodev"}; !reflect.DeepEqual(p.Load, want) {
				t.Errorf("Load = %v, want %v", p.Load, want)
			}
			data, err := kmod.Read(filepath.Join(k.Modules, x.Path("mc")))
			if err != nil || !bytes.HasPrefix(data, []byte("\x7fELF")) {
				t.Errorf("mc's file %s did not read as ELF: %v", x.Path("mc"), err)
			}
		})
	}
}

package kmod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A modules directory shaped like Debian 6.12's: compressed files, a chain
// (v4l2-async -> videodev -> mc), softdeps by module name and by alias.
const (
	testDep = `kernel/drivers/media/mc/mc.ko.xz:
kernel/drivers/media/v4l2-core/videodev.ko.xz: kernel/drivers/media/mc/mc.ko.xz
kernel/drivers/media/v4l2-core/v4l2-async.ko.xz: kernel/drivers/media/v4l2-core/videodev.ko.xz kernel/drivers/media/mc/mc.ko.xz
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/net/dummy.ko:
kernel/drivers/gpu/drm/drm_kms_helper.ko.zst: kernel/drivers/gpu/drm/drm.ko.zst
kernel/drivers/gpu/drm/drm.ko.zst:
`
	testBuiltin = `kernel/drivers/virtio/virtio_pci.ko
kernel/lib/crc32.ko
`
	testSoftdep = `# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep drm_kms_helper pre: crc16 post: dummy
`
)

func TestResolve(t *testing.T) {
	x := ParseIndex([]byte(testDep), []byte(testBuiltin), []byte(testSoftdep))
	tests := []struct {
		name            string
		depends, soft   []string
		loaded          []string
		wantLoad        []string
		wantSoft        []string
		wantMissing     string
		wantMissingFrom string
	}{
		{name: "no dependencies"},
		{name: "one", depends: []string{"mc"}, wantLoad: []string{"mc"}},
		{name: "chain", depends: []string{"v4l2-async"}, wantLoad: []string{"mc", "videodev", "v4l2_async"}},
		{name: "shared dependency once", depends: []string{"videodev", "v4l2_async"}, wantLoad: []string{"mc", "videodev", "v4l2_async"}},
		{name: "dash and underscore are one", depends: []string{"v4l2_async"}, wantLoad: []string{"mc", "videodev", "v4l2_async"}},
		{name: "built in: nothing to load", depends: []string{"virtio-pci", "crc32"}},
		{name: "softdep of a dependency, by alias", depends: []string{"ext4"},
			wantLoad: []string{"crc16", "mbcache", "jbd2", "ext4"}, wantSoft: []string{"crypto-crc32c"}},
		{name: "softdep pre of a dependency by name is soft, post ignored", depends: []string{"drm_kms_helper"},
			wantLoad: []string{"drm", "drm_kms_helper"}, wantSoft: []string{"crc16"}},
		{name: "the module's own softdeps are soft", soft: []string{"crc32c_generic", "crypto-sha256"},
			wantSoft: []string{"crc32c_generic", "crypto-sha256"}},
		{name: "already loaded: satisfied", depends: []string{"v4l2_async"}, loaded: []string{"videodev", "mc"},
			wantLoad: []string{"v4l2_async"}},
		{name: "loaded by hand, not in modules.dep", depends: []string{"helper", "mc"}, loaded: []string{"helper"},
			wantLoad: []string{"mc"}},
		{name: "missing", depends: []string{"mc", "videobuf2_common"}, wantMissing: "videobuf2_common"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loaded := map[string]bool{}
			for _, m := range tt.loaded {
				loaded[m] = true
			}
			p, err := x.Resolve(tt.depends, tt.soft, loaded)
			if tt.wantMissing != "" {
				var me *MissingError
				if !errors.Is(err, ErrMissing) || !errors.As(err, &me) || me.Name != tt.wantMissing || me.Needer != tt.wantMissingFrom {
					t.Fatalf("err = %v, want a MissingError for %s", err, tt.wantMissing)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Load, tt.wantLoad) || !reflect.DeepEqual(p.Soft, tt.wantSoft) {
				t.Errorf("plan = %+v, want Load %v Soft %v", p, tt.wantLoad, tt.wantSoft)
			}
		})
	}
}

func TestResolveMissingInChain(t *testing.T) {
	// A modules.dep that names a dependency it has no line for (a partial
	// copy of a modules directory): the error says who needed it.
	x := ParseIndex([]byte("kernel/a.ko: kernel/b.ko\n"), nil, nil)
	_, err := x.Resolve([]string{"a"}, nil, nil)
	var me *MissingError
	if !errors.As(err, &me) || me.Name != "b" || me.Needer != "a" {
		t.Fatalf("err = %v, want b missing, needed by a", err)
	}
}

func TestIndexPaths(t *testing.T) {
	x := ParseIndex([]byte(testDep), []byte(testBuiltin), nil)
	for name, want := range map[string]string{
		"v4l2-async": "kernel/drivers/media/v4l2-core/v4l2-async.ko.xz",
		"drm":        "kernel/drivers/gpu/drm/drm.ko.zst",
		"dummy":      "kernel/drivers/net/dummy.ko",
		"virtio_pci": "",
	} {
		if got := x.Path(name); got != want {
			t.Errorf("Path(%s) = %q, want %q", name, got, want)
		}
	}
	if !x.Has("virtio-pci") || !x.Builtin("virtio_pci") || x.Builtin("mc") || !x.Has("mc") || x.Has("nope") {
		t.Error("Has/Builtin disagree with the index")
	}
}

func TestSoftPre(t *testing.T) {
	for in, want := range map[string][]string{
		"pre: a b post: c": {"a", "b"},
		"post: c pre: d":   {"d"},
		"a b":              nil,
		"post: c":          nil,
	} {
		if got := SoftPre(in); !reflect.DeepEqual(got, want) {
			t.Errorf("SoftPre(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSymbolFrom(t *testing.T) {
	ko := elfWithSymbols(t, "video_ioctl2", "printk")
	symvers := []byte("0x1234\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n" +
		"0x5678\tvideo_ioctl2\tdrivers/media/v4l2-core/videodev\tEXPORT_SYMBOL\t\n" +
		"0x9abc\tmedia_device_init\tdrivers/media/mc/mc\tEXPORT_SYMBOL_GPL\t\n")
	for module, want := range map[string]string{"videodev": "video_ioctl2", "mc": "", "vmlinux": "printk"} {
		if got := SymbolFrom(ko, symvers, module); got != want {
			t.Errorf("SymbolFrom(%s) = %q, want %q", module, got, want)
		}
	}
	if got := SymbolFrom([]byte("not elf"), symvers, "videodev"); got != "" {
		t.Errorf("SymbolFrom(garbage) = %q", got)
	}
}

// elfWithSymbols compiles an object that calls each of names, which it
// leaves undefined, as a module leaves the kernel's symbols.
func elfWithSymbols(t *testing.T, names ...string) []byte {
	t.Helper()
	var src strings.Builder
	for _, n := range names {
		fmt.Fprintf(&src, "extern void %s(void);\n", n)
	}
	src.WriteString("void f(void) {")
	for _, n := range names {
		fmt.Fprintf(&src, " %s();", n)
	}
	src.WriteString(" }\n")
	dir := t.TempDir()
	c, o := filepath.Join(dir, "m.c"), filepath.Join(dir, "m.o")
	if err := os.WriteFile(c, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cc", "-c", "-o", o, c).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	data, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

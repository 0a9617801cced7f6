package builder

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"kwatch/builder/buildertest"
)

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Modinfo
	}{
		{"printerfact-like",
			"version=1\x00description=facts\x00author=kwatch\x00license=GPL\x00parmtype=facts_limit:int\x00" +
				"parm=facts_limit:serve only the first N facts\x00srcversion=ABC\x00depends=\x00retpoline=Y\x00" +
				"name=printerfact\x00vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \x00\x00\x00",
			Modinfo{Name: "printerfact", Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", License: "GPL",
				Version: "1", Description: "facts",
				Params: []Param{{Name: "facts_limit", Type: "int", Description: "serve only the first N facts"}},
				Fields: map[string][]string{"version": {"1"}, "description": {"facts"}, "author": {"kwatch"},
					"license": {"GPL"}, "parmtype": {"facts_limit:int"}, "parm": {"facts_limit:serve only the first N facts"},
					"srcversion": {"ABC"}, "depends": {""}, "retpoline": {"Y"}, "name": {"printerfact"},
					"vermagic": {"6.1.0-56-amd64 SMP preempt mod_unload modversions "}}}},
		{"depends, params in first-seen order, repeated keys",
			"parm=b:the b\x00parmtype=a:charp\x00parmtype=b:uint\x00author=x\x00author=y\x00depends=usbcore,hid\x00",
			Modinfo{Depends: []string{"usbcore", "hid"},
				Params: []Param{{Name: "b", Type: "uint", Description: "the b"}, {Name: "a", Type: "charp"}},
				Fields: map[string][]string{"parm": {"b:the b"}, "parmtype": {"a:charp", "b:uint"},
					"author": {"x", "y"}, "depends": {"usbcore,hid"}}}},
		{"empty", "", Modinfo{Fields: map[string][]string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseModinfo([]byte(tt.raw)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func xzBytes(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdBytes(t *testing.T, data []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(data, nil)
}

func gzipBytes(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadModinfoFile(t *testing.T) {
	modinfo := []byte("license=GPL\x00name=hello\x00vermagic=6.1.0 mod_unload \x00")
	ko := buildertest.ELFWith(".modinfo", modinfo)
	tests := []struct {
		file     string
		data     []byte
		wantName string
		wantErr  string
	}{
		{"hello.ko", ko, "hello", ""},
		{"hello.ko.xz", xzBytes(t, ko), "hello", ""},
		// Before Linux 5.3 there is no name= entry: the file name says it.
		{"old-style.ko.xz", xzBytes(t, buildertest.ELFWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"nomodinfo.ko", buildertest.ELFWith(".text", []byte{0xc3}), "", "no .modinfo section"},
		{"text.ko", []byte("obj-m := hello.o\n"), "", "not a kernel module"},
		{"hello.ko.zst", zstdBytes(t, ko), "hello", ""},
		{"old-style.ko.zst", zstdBytes(t, buildertest.ELFWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"hello.ko.gz", gzipBytes(t, ko), "hello", ""},
		{"old-style.ko.gz", gzipBytes(t, buildertest.ELFWith(".modinfo", []byte("license=GPL\x00"))), "old_style", ""},
		{"broken.ko.xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0}, "", "decompressing"},
		{"broken.ko.zst", []byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3}, "", "decompressing"},
		{"broken.ko.gz", []byte{0x1f, 0x8b, 8, 0, 0}, "", "decompressing"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			info, err := ReadModinfo(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want one naming %s and containing %q", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Name != tt.wantName || info.License != "GPL" {
				t.Errorf("got name %q license %q, want %q GPL", info.Name, info.License, tt.wantName)
			}
		})
	}
	for suites := range 3 {
		info, err := ReadModinfo(buildertest.WriteKUnitKO(t, dir, "tested", "6.1.0 ", suites))
		if err != nil || info.KUnitSuites != suites || info.Name != "tested" {
			t.Errorf("a module with %d KUnit suites: got %d suites, name %q, err %v", suites, info.KUnitSuites, info.Name, err)
		}
	}
	if _, err := ReadModinfo(filepath.Join(dir, "missing.ko")); err == nil {
		t.Error("ReadModinfo of a missing file: no error")
	}
}

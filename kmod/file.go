// Package kmod reads kernel modules the way kmod's tools do: a module file,
// compressed or not, and a modules directory's indexes (modules.dep,
// modules.builtin, modules.softdep), to work out what must be loaded before
// a module and in which order.
package kmod

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

var (
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// Suffixes are the file name endings of a kernel module: plain (first), or
// compressed the ways the kernel's modules_install can compress it.
var Suffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// Base is a module file's name without its directory and its .ko, .ko.xz,
// .ko.zst or .ko.gz.
func Base(path string) string {
	base := filepath.Base(path)
	for _, suf := range Suffixes {
		if b, ok := strings.CutSuffix(base, suf); ok && b != "" {
			return b
		}
	}
	return base
}

// Name is the module name the kernel knows a module file or a name given by
// a user by: '-' and '_' are the same in module names, and the kernel says '_'.
// The one place kwatch writes that rule: compare names through Name.
func Name(s string) string { return strings.ReplaceAll(Base(s), "-", "_") }

// Read returns the contents of a .ko, decompressing a .ko.xz, .ko.zst or
// .ko.gz (told apart by their magic numbers, not their names).
func Read(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading module: %w", err)
	}
	if data, err = Decompress(data); err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", path, err)
	}
	return data, nil
}

// Decompress returns a module file's ELF bytes: data itself when it is not
// compressed.
func Decompress(data []byte) ([]byte, error) {
	var r io.Reader
	var err error
	switch {
	case bytes.HasPrefix(data, xzMagic):
		r, err = xz.NewReader(bytes.NewReader(data))
	case bytes.HasPrefix(data, zstdMagic):
		var d *zstd.Decoder
		if d, err = zstd.NewReader(bytes.NewReader(data)); err == nil {
			defer d.Close()
			r = d
		}
	case bytes.HasPrefix(data, gzipMagic):
		r, err = gzip.NewReader(bytes.NewReader(data))
	default:
		return data, nil
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

package loop

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sigMagic ends a module with an appended signature (include/linux/module_signature.h).
const sigMagic = "~Module signature appended~\n"

// uploadCopy returns the file to upload for module ko: a copy without its
// debug info in the state dir, or ko itself when there is no state dir or
// objcopy failed (with a notice).
func (l *loop) uploadCopy(ctx context.Context, ko string) string {
	if l.cfg.StateDir == "" {
		return ko
	}
	up, err := stripDebug(ctx, ko, filepath.Join(l.cfg.StateDir, "upload"))
	if err != nil {
		l.notice(fmt.Sprintf("uploading %s with its debug info: %v", filepath.Base(ko), err))
		return ko
	}
	return up
}

// stripDebug writes a copy of ko without its debug sections (objcopy
// --strip-debug, as INSTALL_MOD_STRIP=1 does) into dir, which kwatch owns,
// and returns the copy's path. The guest needs no DWARF to load a module,
// and DWARF is most of a Debian-built one; the unstripped file stays where
// it is, for decoding crash addresses and for the debugger. A signed module
// comes back as it is: stripping would cut off its signature.
func stripDebug(ctx context.Context, ko, dir string) (string, error) {
	signed, err := hasSignature(ko)
	if err != nil || signed {
		return ko, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(ko))
	out, err := exec.CommandContext(ctx, "objcopy", "--strip-debug", ko, dst).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("objcopy --strip-debug %s: %w: %s", ko, err, strings.TrimSpace(string(out)))
	}
	return dst, nil
}

func hasSignature(ko string) (bool, error) {
	f, err := os.Open(ko)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < int64(len(sigMagic)) {
		return false, err
	}
	tail := make([]byte, len(sigMagic))
	if _, err := f.ReadAt(tail, fi.Size()-int64(len(tail))); err != nil && err != io.EOF {
		return false, err
	}
	return bytes.Equal(tail, []byte(sigMagic)), nil
}

package vm

import (
	"fmt"
	"io"
)

// File type bits of a cpio entry's mode (the same values as stat's S_IF*).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// cpioEntry is one member of a newc archive. Data holds a file's contents or
// a symlink's target; Major/Minor are the device number of a device node.
type cpioEntry struct {
	Name         string
	Mode         uint32
	Major, Minor uint32
	Data         []byte
}

// writeCPIO writes entries as a newc ("070701") archive, the format the
// kernel unpacks an initramfs from, followed by the TRAILER!!! entry.
// Parents must come before their children: the kernel creates entries in order.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	for i, e := range entries {
		if err := writeCPIOEntry(w, uint32(i+1), e); err != nil {
			return fmt.Errorf("writing %s to the cpio archive: %w", e.Name, err)
		}
	}
	if err := writeCPIOEntry(w, 0, cpioEntry{Name: "TRAILER!!!"}); err != nil {
		return fmt.Errorf("writing the cpio trailer: %w", err)
	}
	return nil
}

// writeCPIOEntry writes the 110-byte header, the NUL-terminated name and the
// data, padding header+name and data each to a multiple of 4 bytes.
func writeCPIOEntry(w io.Writer, ino uint32, e cpioEntry) error {
	nlink := 1
	if e.Mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(e.Name)+1, 0)
	buf := append([]byte(hdr), e.Name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	buf = append(buf, e.Data...)
	buf = append(buf, make([]byte, pad4(len(e.Data)))...)
	_, err := w.Write(buf)
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

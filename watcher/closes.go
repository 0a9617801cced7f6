package watcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// closeMask is what marks a save as complete: a file opened for writing was
// closed (a plain write, truncate or touch), or a file was renamed into
// place (an editor's atomic save).
const closeMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// closeWatch is a second inotify instance, next to fsnotify's, that reports
// only the moments a save is complete. fsnotify v1.10.1 has the close-write
// op but keeps it unexported (xUnportableCloseWrite, withOps), and it reports
// IN_MOVED_TO as a Create, which looks the same as the O_CREAT that starts a
// write. Its events are not ordered with fsnotify's, so they only decide
// when a batch may close early, never what is in it.
type closeWatch struct {
	f  *os.File // non-blocking, so closing it ends a pending Read
	fd int      // f's descriptor, for adding and removing watches

	mu     sync.Mutex
	dirs   map[int32]string // watch descriptor → absolute directory
	closed bool             // fd is closed, and its number may be reused
}

func newCloseWatch() (*closeWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &closeWatch{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, dirs: map[int32]string{}}, nil
}

// add watches dir, an absolute path; watching the same directory again only
// renames it, as inotify returns the same descriptor for the same inode.
func (c *closeWatch) add(dir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fsnotify.ErrClosed
	}
	wd, err := unix.InotifyAddWatch(c.fd, dir, closeMask)
	if err != nil {
		return err
	}
	c.dirs[int32(wd)] = dir
	return nil
}

// removeUnder drops the watches on dir and every directory below it.
func (c *closeWatch) removeUnder(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for wd, p := range c.dirs {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			_, _ = unix.InotifyRmWatch(c.fd, uint32(wd)) // fails when the directory is gone already
			delete(c.dirs, wd)
		}
	}
}

// read sends the absolute path of every completed file to out until the
// instance is closed or stop is closed.
func (c *closeWatch) read(out chan<- string, stop <-chan struct{}) error {
	var buf [4096]byte
	for {
		n, err := c.f.Read(buf[:])
		if errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading close events: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			c.mu.Lock()
			dir, ok := c.dirs[ev.Wd]
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(c.dirs, ev.Wd)
			}
			c.mu.Unlock()
			// A queue overflow loses only these hints: fsnotify's own
			// overflow makes the batch a rescan.
			if !ok || name == "" || ev.Mask&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO) == 0 {
				continue
			}
			select {
			case out <- filepath.Join(dir, name):
			case <-stop:
				return nil
			}
		}
	}
}

func (c *closeWatch) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.f.Close()
}

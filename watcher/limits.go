package watcher

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// limitError is a one-line error naming the inotify sysctl to raise. It keeps
// the errno for errors.Is but leaves it out of the message.
type limitError struct {
	msg string
	err error
}

func (e *limitError) Error() string { return e.msg }
func (e *limitError) Unwrap() error { return e.err }

// explainLimit turns the errnos of an exhausted inotify limit into a fix:
// ENOSPC from inotify_add_watch is the watch limit, EMFILE from inotify_init
// the instance limit. Other errors are returned wrapped as they are.
func explainLimit(dir string, err error) error {
	var sysctl, what, raise string
	switch {
	case errors.Is(err, unix.ENOSPC):
		sysctl, what, raise = "fs.inotify.max_user_watches", "watch", "524288"
	case errors.Is(err, unix.EMFILE):
		sysctl, what, raise = "fs.inotify.max_user_instances", "instance", "1024"
	default:
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	current := "?"
	if b, rerr := os.ReadFile("/proc/sys/" + strings.ReplaceAll(sysctl, ".", "/")); rerr == nil {
		current = strings.TrimSpace(string(b))
	}
	return &limitError{
		msg: fmt.Sprintf("watching %s: inotify %s limit reached (%s=%s); raise it with: sudo sysctl %s=%s",
			dir, what, sysctl, current, sysctl, raise),
		err: err,
	}
}

// remoteFS names the filesystems on which inotify only sees local changes.
var remoteFS = map[int64]string{
	unix.NFS_SUPER_MAGIC:  "NFS",
	unix.V9FS_MAGIC:       "9p",
	unix.FUSE_SUPER_MAGIC: "FUSE",
	unix.CIFS_SUPER_MAGIC: "CIFS",
	unix.SMB2_SUPER_MAGIC: "SMB",
	unix.SMB_SUPER_MAGIC:  "SMB",
}

// remoteWarning returns a warning when dir is on a network or VM-shared
// filesystem, where edits made on the other side produce no inotify events.
func remoteWarning(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // the walk reports real problems with dir
	}
	name, ok := remoteFS[st.Type]
	if !ok {
		return nil
	}
	return fmt.Errorf("warning: %s is on %s: changes made on another machine or the host will not be seen; edit them on this machine or watch a local copy", dir, name)
}

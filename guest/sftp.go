package guest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/pkg/sftp"
)

// Upload copies the local file to remotePath over SFTP. It writes
// remotePath+".kwatch-tmp" and renames it over remotePath, so the guest never
// sees a half-written file; missing remote directories are created.
func (c *Client) Upload(ctx context.Context, local, remotePath string) (bytes int64, err error) {
	f, err := os.Open(local)
	if err != nil {
		return 0, fmt.Errorf("uploading: %w", err)
	}
	defer f.Close()

	s, conn, err := c.session(ctx)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	// Ending the session makes pending SFTP requests fail: the only way to interrupt them.
	defer c.cancelSession(ctx, conn, s)()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("uploading %s: %w", local, ctx.Err())
		}
	}()

	w, err := s.StdinPipe()
	if err != nil {
		return 0, fmt.Errorf("starting sftp on %s: %w", c.who(), err)
	}
	r, err := s.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("starting sftp on %s: %w", c.who(), err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		return 0, fmt.Errorf("starting sftp on %s (is an sftp-server installed in the guest?): %w", c.who(), err)
	}
	sc, err := sftp.NewClientPipe(r, w, sftp.UseConcurrentWrites(true))
	if err != nil {
		return 0, fmt.Errorf("starting sftp on %s: %w", c.who(), err)
	}
	defer sc.Close()

	if err := sc.MkdirAll(path.Dir(remotePath)); err != nil {
		return 0, fmt.Errorf("creating %s in the guest: %w", path.Dir(remotePath), err)
	}
	tmp := remotePath + ".kwatch-tmp"
	n, err := write(sc, tmp, f)
	if err == nil {
		err = replace(sc, tmp, remotePath)
	}
	if err != nil {
		sc.Remove(tmp)
		return 0, fmt.Errorf("uploading %s to %s in the guest: %w", local, remotePath, err)
	}
	return n, nil
}

func write(sc *sftp.Client, remotePath string, f *os.File) (int64, error) {
	dst, err := sc.Create(remotePath)
	if err != nil {
		return 0, err
	}
	n, err := dst.ReadFrom(f)
	return n, errors.Join(err, dst.Close())
}

// replace renames from over to. Plain SFTP rename refuses to overwrite, so
// without the posix-rename extension the old file is removed first.
func replace(sc *sftp.Client, from, to string) error {
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); ok {
		return sc.PosixRename(from, to)
	}
	if err := sc.Remove(to); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return sc.Rename(from, to)
}

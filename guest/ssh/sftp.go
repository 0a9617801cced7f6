package ssh

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/pkg/sftp"
)

// Upload copies the local file into this connection's private directory in
// the guest, as name, and returns its path there, over the connection's
// SFTP session (kept between uploads).
//
// The directory is made fresh (mktemp -d) on first use and checked before
// every upload: a directory at a fixed path such as /tmp/kwatch could be
// created first by another user of the guest, who could then swap the module
// between the upload and root's insmod.
func (c *Client) Upload(ctx context.Context, local, name string) (remote string, bytes int64, err error) {
	if !fileName(name) {
		return "", 0, fmt.Errorf("uploading %s: bad file name %q", local, name)
	}
	f, err := os.Open(local)
	if err != nil {
		return "", 0, fmt.Errorf("uploading: %w", err)
	}
	defer f.Close()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("uploading %s: %w", local, ctx.Err())
		}
	}()
	sc, release, err := c.sftp(ctx)
	if err != nil {
		return "", 0, err
	}
	defer func() { release(err) }()
	dir, err := c.privateDir(ctx, sc)
	if err != nil {
		return "", 0, err
	}
	// Written in place: no one else can reach the private directory, and
	// kwatch loads a module only after its upload succeeded.
	remote = path.Join(dir, name)
	c.created(name)
	n, err := write(sc, remote, f)
	if err != nil {
		return "", 0, fmt.Errorf("uploading %s to %s in the guest: %w", local, remote, err)
	}
	return remote, n, nil
}

// RemoveUploads removes the private upload directory with the files Upload
// put there, and nothing else: call it when done with the guest.
func (c *Client) RemoveUploads(ctx context.Context) (err error) {
	c.dirMu.Lock()
	none := c.dir == ""
	c.dirMu.Unlock()
	if none {
		return nil
	}
	// The SFTP session first, then the dir, in Upload's order.
	sc, release, err := c.sftp(ctx)
	if err != nil {
		return err
	}
	defer func() { release(err) }()
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if c.dir == "" {
		return nil
	}
	if err := checkPrivate(sc, c.dir, c.dirUID); err != nil {
		if errors.Is(err, fs.ErrNotExist) { // the guest rebooted since
			c.dir, c.files = "", nil
			c.saveRecord()
			return nil
		}
		return err
	}
	for name := range c.files {
		if err := sc.Remove(path.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s in the guest: %w", path.Join(c.dir, name), err)
		}
	}
	if err := sc.RemoveDirectory(c.dir); err != nil {
		return fmt.Errorf("removing %s in the guest: %w", c.dir, err)
	}
	c.dir, c.files = "", nil
	c.saveRecord()
	return nil
}

// sftp returns the connection's SFTP session, starting one when there is
// none (three round trips: the channel, the subsystem, SFTP's version) or
// the connection changed. Uses are one at a time: call release when done,
// with the use's error; a failed or cancelled use ends the session, so the
// next use starts afresh.
func (c *Client) sftp(ctx context.Context) (sc *sftp.Client, release func(error), err error) {
	c.sftpMu.Lock()
	conn, err := c.connect(ctx)
	if err != nil {
		c.sftpMu.Unlock()
		return nil, nil, err
	}
	if c.sftpc != nil && c.sftpConn != conn {
		c.endSFTP()
	}
	if c.sftpc == nil {
		// dropbear sometimes ends a session whose subsystem request comes
		// right after another session was cancelled (seen 1 in 15): once more.
		err := c.startSFTP(ctx)
		if err != nil && ctx.Err() == nil {
			err = c.startSFTP(ctx)
		}
		if err != nil {
			c.sftpMu.Unlock()
			return nil, nil, err
		}
	}
	// Ending the session makes pending SFTP requests fail: the only way to interrupt them.
	stop := c.cancelSession(ctx, c.sftpConn, c.sftpSession)
	return c.sftpc, func(err error) {
		stop()
		if err != nil || ctx.Err() != nil {
			c.endSFTP()
		}
		c.sftpMu.Unlock()
	}, nil
}

// startSFTP starts an SFTP session on a new channel; the caller holds sftpMu.
func (c *Client) startSFTP(ctx context.Context) error {
	s, conn, err := c.session(ctx)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		s.Close()
		return fmt.Errorf("starting sftp on %s: %w", c.who(), err)
	}
	w, err := s.StdinPipe()
	if err != nil {
		return fail(err)
	}
	r, err := s.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		return fail(fmt.Errorf("is an sftp-server installed in the guest? %w", err))
	}
	// A guest that stops answering must not hang the start: end the channel with ctx.
	stop := c.cancelSession(ctx, conn, s)
	sc, err := sftp.NewClientPipe(r, w, sftp.UseConcurrentWrites(true))
	if stop() && err == nil { // ctx ended the session it would keep
		sc.Close()
		err = ctx.Err()
	}
	if err != nil {
		return fail(err)
	}
	c.sftpc, c.sftpConn, c.sftpSession = sc, conn, s
	return nil
}

// endSFTP ends the SFTP session, if any; the caller holds sftpMu.
func (c *Client) endSFTP() {
	if c.sftpc != nil {
		c.sftpc.Close()
		c.sftpSession.Close()
		c.sftpc, c.sftpConn, c.sftpSession = nil, nil, nil
	}
}

// privateDir returns the upload directory, making a new one when there is
// none yet or the guest lost it (a reboot), after checking it is kwatch's own.
func (c *Client) privateDir(ctx context.Context, sc *sftp.Client) (string, error) {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if c.dir != "" {
		err := checkPrivate(sc, c.dir, c.dirUID)
		if !errors.Is(err, fs.ErrNotExist) {
			return c.dir, err
		}
		c.dir, c.files = "", nil
	}
	// mktemp -d makes a new directory of mode 0700, or fails.
	out, stderr, exit, err := c.Run(ctx, "mktemp -d /tmp/kwatch.XXXXXXXX && id -u")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(out))
	if exit != 0 || len(f) != 2 || !path.IsAbs(f[0]) {
		return "", fmt.Errorf("making an upload directory in the guest with mktemp -d: exit %d: %s", exit, strings.TrimSpace(string(stderr)+string(out)))
	}
	uid, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return "", fmt.Errorf("making an upload directory in the guest: id -u printed %q", f[1])
	}
	// What an earlier run left goes now that the login's uid is known.
	c.removeRecorded(sc, uint32(uid))
	if err := checkPrivate(sc, f[0], uint32(uid)); err != nil {
		return "", err
	}
	c.dir, c.dirUID, c.files = f[0], uint32(uid), map[string]bool{}
	c.saveRecord()
	return c.dir, nil
}

// checkPrivate makes sure dir is a directory (not a link to one) of mode 0700
// owned by uid: no one else can put or swap a file in it.
func checkPrivate(sc *sftp.Client, dir string, uid uint32) error {
	fi, err := sc.Lstat(dir)
	if err != nil {
		return fmt.Errorf("checking the upload directory %s in the guest: %w", dir, err)
	}
	st, ok := fi.Sys().(*sftp.FileStat)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("the upload directory %s in the guest is not kwatch's own: it is no directory now (mode %v); not uploading into it", dir, fi.Mode())
	case !ok || st.UID != uid || fi.Mode().Perm() != 0o700:
		owner := "unknown"
		if ok {
			owner = strconv.FormatUint(uint64(st.UID), 10)
		}
		return fmt.Errorf("the upload directory %s in the guest is not kwatch's own: owner uid %s, mode %04o (want uid %d, 0700); someone else could swap a module there, so kwatch does not load from it", dir, owner, fi.Mode().Perm(), uid)
	}
	return nil
}

// fileName reports whether name is a plain file name, with no directory.
func fileName(name string) bool {
	return name != "" && !strings.Contains(name, "/") && name != "." && name != ".."
}

// created records files Upload makes, for RemoveUploads.
func (c *Client) created(names ...string) {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if c.files == nil {
		c.files = map[string]bool{}
	}
	added := false
	for _, n := range names {
		added = added || !c.files[n]
		c.files[n] = true
	}
	if added {
		c.saveRecord()
	}
}

func write(sc *sftp.Client, remotePath string, f *os.File) (int64, error) {
	dst, err := sc.Create(remotePath)
	if err != nil {
		return 0, err
	}
	n, err := dst.ReadFrom(f)
	return n, errors.Join(err, dst.Close())
}

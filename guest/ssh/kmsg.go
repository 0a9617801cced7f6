package ssh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	xssh "golang.org/x/crypto/ssh"

	"kwatch/kmsg"
)

// StreamKmsg follows the guest's kernel log and calls fn, in order, for each
// record with Seq > after; after = 0 means from the oldest record kept
// (including seq 0, the kernel's first). It returns when ctx is done or the
// connection drops: call it again with the last Seq seen to go on without
// repeating a record. Records the kernel overwrote before they could be read
// are reported to fn as one record "kwatch: N kernel log lines lost".
// fn is called on the caller's goroutine, one record at a time; the stream
// waits while it runs, so it should return soon. It may call the Client.
func (c *Client) StreamKmsg(ctx context.Context, after uint64, fn func(kmsg.Record)) error {
	next := after + 1
	if after == 0 {
		next = 0
	}
	for {
		var err error
		next, err = c.readKmsg(ctx, next, fn)
		if err != nil {
			return err
		}
	}
}

// readKmsg runs one `cat /dev/kmsg` in the guest and calls fn for records
// from seq next on. cat exits when records were overwritten under it (EPIPE),
// and readKmsg then returns the seq expected next and no error, to go on
// with a new reader.
func (c *Client) readKmsg(ctx context.Context, next uint64, fn func(kmsg.Record)) (uint64, error) {
	s, conn, err := c.session(ctx)
	if err != nil {
		return next, err
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		return next, fmt.Errorf("reading guest kernel log: %w", err)
	}
	var stderr bytes.Buffer
	s.Stderr = &stderr
	if err := s.Start("exec cat /dev/kmsg"); err != nil {
		return next, fmt.Errorf("reading guest kernel log: %w", err)
	}
	// cat writes only when the kernel logs something: only ending the session stops it.
	defer c.cancelSession(ctx, conn, s)()

	next, err = deliver(out, next, fn)
	err = errors.Join(err, s.Wait())
	if ctx.Err() != nil {
		return next, ctx.Err()
	}
	var exit *xssh.ExitError
	if errors.As(err, &exit) && strings.Contains(stderr.String(), "Broken pipe") {
		return next, nil
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return next, fmt.Errorf("reading guest kernel log: %s", msg)
	}
	return next, fmt.Errorf("reading guest kernel log: %w", err)
}

// deliver reads /dev/kmsg text from r and calls fn for the records from seq
// next on, reporting records missing before one as lost. It returns the seq
// expected next.
func deliver(r io.Reader, next uint64, fn func(kmsg.Record)) (uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rec, ok := kmsg.Parse(sc.Text())
		if !ok || rec.Seq < next {
			continue
		}
		if lost := rec.Seq - next; lost > 0 {
			fn(kmsg.Record{
				Seq:     rec.Seq - 1,
				Level:   4,
				Time:    rec.Time,
				Message: fmt.Sprintf("kwatch: %d kernel log lines lost (overwritten before they could be read)", lost),
			})
		}
		fn(rec)
		next = rec.Seq + 1
	}
	return next, sc.Err()
}

// WriteKmsg writes msg to the guest's kernel log, at level notice. The
// caller can wait for it in StreamKmsg to know the stream caught up.
func (c *Client) WriteKmsg(ctx context.Context, msg string) error {
	out, exit, err := c.script(ctx, "printf '%s\\n' "+Quote("<5>"+msg)+" >/dev/kmsg")
	if err != nil {
		return err
	}
	if exit != 0 {
		return fmt.Errorf("writing to the guest's /dev/kmsg: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

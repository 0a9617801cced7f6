package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fatih/color"
	"golang.org/x/crypto/ssh"
)

// Record is one kernel log record, as read from /dev/kmsg.
type Record struct {
	Seq      uint64
	Level    int           // 0 emerg .. 7 debug
	Facility int           // 0 kernel, 1 user (writes to /dev/kmsg), ...
	Time     time.Duration // since boot
	Cont     bool          // a fragment continued by the next record (pr_cont)
	Message  string        // \xNN escapes decoded; may span lines
}

// ParseKmsg parses one record line of /dev/kmsg:
// "prio,seq,ts_usec,flags[,...];message". It returns false for anything else,
// including the " KEY=value" dictionary lines that may follow a record.
func ParseKmsg(line string) (Record, bool) {
	header, msg, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ";")
	if !ok || strings.HasPrefix(line, " ") {
		return Record{}, false
	}
	f := strings.Split(header, ",")
	if len(f) < 4 {
		return Record{}, false
	}
	prio, err1 := strconv.Atoi(f[0])
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	usec, err3 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || prio < 0 {
		return Record{}, false
	}
	return Record{
		Seq:      seq,
		Level:    prio & 7,
		Facility: prio >> 3,
		Time:     time.Duration(usec) * time.Microsecond,
		Cont:     strings.Contains(f[3], "c"),
		Message:  unescape(msg),
	}, true
}

// unescape decodes the \xNN escapes the kernel uses for control characters,
// backslashes and non-ASCII bytes.
func unescape(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// StreamKmsg follows the guest's kernel log and calls fn, in order, for each
// record with Seq > after; after = 0 means from the oldest record kept
// (including seq 0, the kernel's first). It returns when ctx is done or the
// connection drops: call it again with the last Seq seen to go on without
// repeating a record. Records the kernel overwrote before they could be read
// are reported to fn as one record "kwatch: N kernel log lines lost".
func (c *Client) StreamKmsg(ctx context.Context, after uint64, fn func(Record)) error {
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
func (c *Client) readKmsg(ctx context.Context, next uint64, fn func(Record)) (uint64, error) {
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
	var exit *ssh.ExitError
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
func deliver(r io.Reader, next uint64, fn func(Record)) (uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rec, ok := ParseKmsg(sc.Text())
		if !ok || rec.Seq < next {
			continue
		}
		if lost := rec.Seq - next; lost > 0 {
			fn(Record{
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
	_, stderr, exit, err := c.Run(ctx, "printf '%s\\n' "+Quote("<5>"+msg)+" >/dev/kmsg")
	if err != nil {
		return err
	}
	if exit != 0 {
		return fmt.Errorf("writing to the guest's /dev/kmsg: %s", strings.TrimSpace(string(stderr)))
	}
	return nil
}

var (
	timeColor  = color.New(color.Faint)
	levelColor = [8]*color.Color{
		color.New(color.FgRed, color.Bold), // emerg
		color.New(color.FgRed, color.Bold), // alert
		color.New(color.FgRed, color.Bold), // crit
		color.New(color.FgRed),             // err
		color.New(color.FgYellow),          // warning
		nil,                                // notice
		nil,                                // info
		color.New(color.Faint),             // debug
	}
)

// FormatRecord formats r like dmesg, "[   12.345678] message", coloured by
// level unless colour is off (NO_COLOR, or not a terminal). Lines after the
// first of a multi-line message are indented under the first.
func FormatRecord(r Record) string {
	stamp := fmt.Sprintf("[%5d.%06d]", r.Time/time.Second, (r.Time%time.Second)/time.Microsecond)
	msg := strings.ReplaceAll(r.Message, "\n", "\n"+strings.Repeat(" ", len(stamp)+1))
	if c := levelColor[r.Level&7]; c != nil {
		msg = c.Sprint(msg)
	}
	return timeColor.Sprint(stamp) + " " + msg
}

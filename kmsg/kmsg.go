// Package kmsg parses the kernel log records of /dev/kmsg and formats them like dmesg.
package kmsg

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fatih/color"
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

// Parse parses one record line of /dev/kmsg:
// "prio,seq,ts_usec,flags[,...];message". It returns false for anything else,
// including the " KEY=value" dictionary lines that may follow a record.
func Parse(line string) (Record, bool) {
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
	usec, err3 := strconv.ParseUint(f[2], 10, 64)
	// A time stamp past what a Duration holds (292,000 years) is no kernel's.
	if err := errors.Join(err1, err2, err3); err != nil || prio < 0 || usec > math.MaxInt64/uint64(time.Microsecond) {
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

// Format formats r like dmesg, "[   12.345678] message", coloured by
// level unless colour is off (NO_COLOR, or not a terminal). Lines after the
// first of a multi-line message are indented under the first.
func Format(r Record) string {
	stamp := fmt.Sprintf("[%5d.%06d]", r.Time/time.Second, (r.Time%time.Second)/time.Microsecond)
	msg := strings.ReplaceAll(r.Message, "\n", "\n"+strings.Repeat(" ", len(stamp)+1))
	if c := levelColor[r.Level&7]; c != nil {
		msg = c.Sprint(msg)
	}
	return timeColor.Sprint(stamp) + " " + msg
}

package kmsg

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fatih/color"
)

// FuzzParse feeds Parse any line a guest could send as /dev/kmsg.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, line string) {
		r, ok := Parse(line)
		if !ok {
			if r != (Record{}) {
				t.Fatalf("Parse(%q) refused the line but returned %+v", line, r)
			}
			return
		}
		if r.Level < 0 || r.Level > 7 || r.Facility < 0 || r.Time < 0 {
			t.Fatalf("Parse(%q) = %+v: level, facility or time out of range", line, r)
		}
		// Decoding escapes only shortens the message; without any it is the input's.
		_, raw, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ";")
		if len(r.Message) > len(raw) || (!strings.Contains(raw, `\x`) && r.Message != raw) {
			t.Fatalf("Parse(%q).Message = %q, not the message of the line", line, r.Message)
		}
		color.NoColor = true
		out := Format(r)
		if want := strings.Count(r.Message, "\n"); strings.Count(out, "\n") != want {
			t.Fatalf("Format(%+v) = %q: %d line breaks, want %d", r, out, strings.Count(out, "\n"), want)
		}
		if !strings.HasPrefix(out, "[") || !strings.Contains(out, "] ") {
			t.Fatalf("Format(%+v) = %q: no time stamp", r, out)
		}
	})
}

// escape encodes a message as the kernel's devkmsg_read does
// (msg_add_ext_text): control characters, DEL and above, and backslash as \xNN.
func escape(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c >= 127 || c == '\\' {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FuzzParseRoundTrip writes records the way the kernel does and checks
// that Parse gives them back unchanged.
func FuzzParseRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, prio uint16, seq, usec uint64, cont bool, msg string) {
		usec %= math.MaxInt64 / 1000
		flags := "-"
		if cont {
			flags = "c"
		}
		line := fmt.Sprintf("%d,%d,%d,%s,caller=T1;%s\n", prio, seq, usec, flags, escape(msg))
		want := Record{Seq: seq, Level: int(prio & 7), Facility: int(prio >> 3), Time: time.Duration(usec) * time.Microsecond, Cont: cont, Message: msg}
		if got, ok := Parse(line); !ok || got != want {
			t.Fatalf("Parse(%q) = %+v, %v; want %+v", line, got, ok, want)
		}
	})
}

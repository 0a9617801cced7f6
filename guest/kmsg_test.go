package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fatih/color"
)

func TestParseKmsg(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Record
		ok   bool
	}{
		{
			name: "first record",
			line: "5,0,0,-;Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\n",
			want: Record{Seq: 0, Level: 5, Message: "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC"},
			ok:   true,
		},
		{
			name: "tab escape",
			line: `6,90,242318,-;rcu: \x09RCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=2.`,
			want: Record{Seq: 90, Level: 6, Time: 242318 * time.Microsecond, Message: "rcu: \tRCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=2."},
			ok:   true,
		},
		{
			name: "embedded newline and backslash",
			line: `4,1203,12345678,-;hello: line one\x0aline two C:\x5cpath`,
			want: Record{Seq: 1203, Level: 4, Time: 12345678 * time.Microsecond, Message: "hello: line one\nline two C:\\path"},
			ok:   true,
		},
		{
			name: "utf-8 bytes",
			line: `6,7,1,-;caf\xc3\xa9`,
			want: Record{Seq: 7, Level: 6, Time: time.Microsecond, Message: "café"},
			ok:   true,
		},
		{
			name: "bad escape kept literally",
			line: `6,8,1,-;odd \xzz and \x4`,
			want: Record{Seq: 8, Level: 6, Time: time.Microsecond, Message: `odd \xzz and \x4`},
			ok:   true,
		},
		{
			name: "continuation fragment",
			line: "6,2001,3000000,c;hello: values:",
			want: Record{Seq: 2001, Level: 6, Time: 3 * time.Second, Cont: true, Message: "hello: values:"},
			ok:   true,
		},
		{
			name: "user space write with facility and caller id",
			line: "13,2002,3500000,-,caller=T231;kwatch: loaded hello (build 3)",
			want: Record{Seq: 2002, Level: 5, Facility: 1, Time: 3500 * time.Millisecond, Message: "kwatch: loaded hello (build 3)"},
			ok:   true,
		},
		{
			name: "emergency with semicolon in message",
			line: "0,55,100,-;Kernel panic - not syncing: Fatal exception; rebooting",
			want: Record{Seq: 55, Level: 0, Time: 100 * time.Microsecond, Message: "Kernel panic - not syncing: Fatal exception; rebooting"},
			ok:   true,
		},
		{name: "dictionary line", line: " SUBSYSTEM=acpi"},
		{name: "dictionary line with separators", line: " DEVICE=+acpi:PNP0A08:00;1,2,3,4"},
		{name: "short header", line: "6,1;message"},
		{name: "no separator", line: "6,1,2,-"},
		{name: "non-numeric seq", line: "6,x,2,-;message"},
		{name: "empty", line: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseKmsg(tt.line)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParseKmsg(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFormatRecord(t *testing.T) {
	defer func(old bool) { color.NoColor = old }(color.NoColor)

	color.NoColor = true
	r := Record{Level: 3, Time: 12345678 * time.Microsecond, Message: "hello: oops\nsecond line"}
	if got, want := FormatRecord(r), "[   12.345678] hello: oops\n               second line"; got != want {
		t.Errorf("without colour: FormatRecord(%+v) = %q, want %q", r, got, want)
	}

	color.NoColor = false
	const faint = "\x1b[2m"
	tests := []struct {
		level int
		sgr   string // the escape sequence expected right before the message, "" for none
	}{
		{0, "\x1b[31;1m"},
		{2, "\x1b[31;1m"},
		{3, "\x1b[31m"},
		{4, "\x1b[33m"},
		{5, ""},
		{6, ""},
		{7, faint},
	}
	for _, tt := range tests {
		r := Record{Level: tt.level, Time: 100000 * time.Second, Message: "msg"}
		got := FormatRecord(r)
		if stamp := faint + "[100000.000000]"; !strings.HasPrefix(got, stamp) {
			t.Errorf("level %d: FormatRecord = %q, want it to start with the faint time stamp %q", tt.level, got, stamp)
		}
		if !strings.Contains(got, " "+tt.sgr+"msg") {
			t.Errorf("level %d: FormatRecord = %q, want %q between the time stamp and the message", tt.level, got, tt.sgr)
		}
	}
}

func TestDeliver(t *testing.T) {
	const log = "6,5,100,-;five\n" +
		" SUBSYSTEM=acpi\n" +
		" DEVICE=+acpi:PNP0A08:00\n" +
		"6,6,200,-;six\n" +
		"4,9,300,-;nine\n"
	lost := func(n int) string { return "kwatch: " + strconv.Itoa(n) + " kernel log lines lost" }
	tests := []struct {
		name     string
		next     uint64
		want     []string // messages, or the start of one
		wantSeqs []uint64
		wantNext uint64
	}{
		{"replay from before the oldest", 3, []string{lost(2), "five", "six", lost(2), "nine"}, []uint64{4, 5, 6, 8, 9}, 10},
		{"already seen up to six", 7, []string{lost(2), "nine"}, []uint64{8, 9}, 10},
		{"resume exactly", 6, []string{"six", lost(2), "nine"}, []uint64{6, 8, 9}, 10},
		{"all seen", 10, nil, nil, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Record
			next, err := deliver(strings.NewReader(log), tt.next, func(r Record) { got = append(got, r) })
			if err != nil {
				t.Fatal(err)
			}
			if next != tt.wantNext {
				t.Errorf("next = %d, want %d", next, tt.wantNext)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d records %+v, want %d: %q", len(got), got, len(tt.want), tt.want)
			}
			for i, r := range got {
				if !strings.HasPrefix(r.Message, tt.want[i]) || r.Seq != tt.wantSeqs[i] {
					t.Errorf("record %d = seq %d %q, want seq %d %q", i, r.Seq, r.Message, tt.wantSeqs[i], tt.want[i])
				}
			}
		})
	}
}

// TestStreamKmsg follows a real kernel log: the dropbear fixture runs on
// this machine, so its /dev/kmsg stands in for a guest's.
func TestStreamKmsg(t *testing.T) {
	_, cfg := newSSHD(t)
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skip("no /dev/kmsg here")
	}
	c := dial(t, cfg)
	ctx := testContext(t)
	marker := fmt.Sprintf("kwatch test marker %d", time.Now().UnixNano())
	if err := c.WriteKmsg(ctx, marker); err != nil {
		t.Fatal(err)
	}

	// From the start: every record in order, up to the marker.
	var got []Record
	streamCtx, cancel := context.WithCancel(ctx)
	err := c.StreamKmsg(streamCtx, 0, func(r Record) {
		got = append(got, r)
		if r.Message == marker {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamKmsg: %v, want context.Canceled after the marker", err)
	}
	if got[0].Seq != 0 && !strings.Contains(got[0].Message, "lost") {
		t.Errorf("first record has seq %d and is no lost-lines notice", got[0].Seq)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("record %d has seq %d after seq %d", i, got[i].Seq, got[i-1].Seq)
		}
	}
	m := got[len(got)-1]
	if m.Level != 5 || m.Facility != 1 {
		t.Errorf("marker record %+v, want level 5 (notice) and facility 1 (user)", m)
	}

	// Resuming after the record before the marker gives the marker first.
	var first Record
	streamCtx, cancel = context.WithCancel(ctx)
	c.StreamKmsg(streamCtx, m.Seq-1, func(r Record) {
		first = r
		cancel()
	})
	if first.Seq != m.Seq || first.Message != marker {
		t.Errorf("StreamKmsg after seq %d started with %+v, want the marker", m.Seq-1, first)
	}

	// A record written while following arrives, and nothing from before.
	live := marker + " live"
	streamCtx, cancel = context.WithCancel(ctx)
	done := make(chan error, 1)
	var after []Record
	go func() {
		done <- c.StreamKmsg(streamCtx, m.Seq, func(r Record) {
			after = append(after, r)
			if r.Message == live {
				cancel()
			}
		})
	}()
	time.Sleep(500 * time.Millisecond) // most likely following by now; if not, the replay delivers it
	if err := c.WriteKmsg(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamKmsg: %v, want context.Canceled after the live marker", err)
	}
	for _, r := range after {
		if r.Seq <= m.Seq {
			t.Errorf("StreamKmsg after seq %d delivered seq %d", m.Seq, r.Seq)
		}
	}
}

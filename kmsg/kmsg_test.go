package kmsg

import (
	"strings"
	"testing"
	"time"

	"github.com/fatih/color"
)

func TestParse(t *testing.T) {
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
		{name: "time stamp past a Duration", line: "0,0,8000000000000000000,;x"},
		{name: "negative time stamp", line: "6,1,-5,-;x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Parse(tt.line)
			if ok != tt.ok || got != tt.want {
				t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	defer func(old bool) { color.NoColor = old }(color.NoColor)

	color.NoColor = true
	r := Record{Level: 3, Time: 12345678 * time.Microsecond, Message: "hello: oops\nsecond line"}
	if got, want := Format(r), "[   12.345678] hello: oops\n               second line"; got != want {
		t.Errorf("without colour: Format(%+v) = %q, want %q", r, got, want)
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
		got := Format(r)
		if stamp := faint + "[100000.000000]"; !strings.HasPrefix(got, stamp) {
			t.Errorf("level %d: Format = %q, want it to start with the faint time stamp %q", tt.level, got, stamp)
		}
		if !strings.Contains(got, " "+tt.sgr+"msg") {
			t.Errorf("level %d: Format = %q, want %q between the time stamp and the message", tt.level, got, tt.sgr)
		}
	}
}

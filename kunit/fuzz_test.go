package kunit

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds a Parser any kernel log records a guest could print (the
// input's NUL-separated parts; a record may span lines) and checks each
// case it reports against that log.
func FuzzParse(f *testing.F) {
	recorded, _ := filepath.Glob("testdata/*.jsonl")
	for _, p := range recorded {
		f.Add(strings.Join(readRecords(f, p), "\x00"))
	}
	f.Fuzz(func(t *testing.T, log string) {
		records := strings.Split(log, "\x00")
		p := NewParser()
		for _, r := range records {
			p.Feed(r)
		}
		cases := p.Finish()
		if max := strings.Count(log, "\n") + len(records) + maxUnfinished + 1; len(cases) > max {
			t.Fatalf("%d cases from %d lines", len(cases), max)
		}
		for _, c := range cases {
			switch c.Status {
			case Pass, Fail, Skip, Crash:
			default:
				t.Fatalf("case %+v: status %q", c, c.Status)
			}
			if (c.File != "") != (c.Line > 0) || !strings.Contains(log, c.File) {
				t.Fatalf("case %+v: its file and line are not from the log", c)
			}
			if !strings.HasPrefix(c.Name, "case ") && !strings.Contains(log, c.Name) || !strings.Contains(log, c.Suite) || !strings.Contains(log, c.Param) {
				t.Fatalf("case %+v: its names are not from the log", c)
			}
			for _, l := range strings.Split(c.Message, "\n") {
				if c.Status != Crash && !strings.Contains(log, l) && !strings.Contains(strings.ToUpper(log), strings.ToUpper(l)) {
					t.Fatalf("case %+v: message line %q is not from the log", c, l)
				}
			}
		}
		if again := p.Finish(); len(again) != 0 {
			t.Fatalf("a second Finish returned %d cases", len(again))
		}
	})
}

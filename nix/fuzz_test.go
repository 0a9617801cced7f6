package nix

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzProgress feeds Progress whatever nix (or something in its place)
// might write, split anywhere: it never panics, passes every line that is
// not internal-json through as a line of its own, and on a terminal ends
// with the status line cleared. Seeds: nix 2.8's log of a build, and broken events.
func FuzzProgress(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, split uint16, terminal bool) {
		var out bytes.Buffer
		p := &Progress{W: &out, Terminal: terminal}
		at := int(split) % (len(in) + 1)
		p.Write(in[:at])
		p.Write(in[at:])
		p.Close()
		got := out.String()
		for _, line := range strings.Split(string(in), "\n") {
			if line != "" && !strings.HasPrefix(line, "@nix ") && !strings.Contains(got, line+"\n") {
				t.Fatalf("the plain line %q is not in the output %q", line, got)
			}
		}
		if terminal && got != "" && !strings.HasSuffix(got, "\n") && !strings.HasSuffix(got, "\r\x1b[K") {
			t.Fatalf("on a terminal the output %q ends with a status line left standing", got)
		}
	})
}

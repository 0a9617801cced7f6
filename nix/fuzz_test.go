package nix

import (
	"bytes"
	"strings"
	"testing"
)

// progressSeed is nix 2.8's internal-json log of a small build.
const progressSeed = `@nix {"action":"start","id":1,"level":4,"text":"copying '/tmp/f'","type":0}
@nix {"action":"stop","id":1}
@nix {"action":"start","id":2,"level":0,"text":"","type":104}
@nix {"action":"result","fields":[0,1,0,0],"id":2,"type":105}
@nix {"action":"start","fields":["/nix/store/iss3hv116njcmycyikwzjpvyy7wxwrfp-kwprog-1.drv","ssh://b",1,1],"id":3,"level":3,"text":"building '/nix/store/iss3hv116njcmycyikwzjpvyy7wxwrfp-kwprog-1.drv'","type":105}
@nix {"action":"result","fields":["buildPhase"],"id":3,"type":104}
@nix {"action":"result","fields":["hello"],"id":3,"type":101}
@nix {"action":"start","id":4,"level":3,"text":"downloading 'x'","type":101}
@nix {"action":"result","fields":[1048576,4194304,0,0],"id":4,"type":105}
@nix {"action":"msg","level":0,"msg":"error: builder failed"}
@nix {"action":"result","fields":[1,1,0,0],"id":2,"type":105}
@nix {"action":"stop","id":3}
warning: a plain line
`

// FuzzProgress feeds Progress whatever nix (or something in its place)
// might write, split anywhere: it never panics, passes every line that is
// not internal-json through as a line of its own, and on a terminal ends
// with the status line cleared.
func FuzzProgress(f *testing.F) {
	f.Add([]byte(progressSeed), uint16(100), false)
	f.Add([]byte(progressSeed), uint16(7), true)
	f.Add([]byte(`@nix {"action":"result","fields":[1,0],"id":9,"type":105}`+"\n@nix {\n@nix []\nplain"), uint16(3), true)
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

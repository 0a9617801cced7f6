package sshconfig

import (
	"reflect"
	"strings"
	"testing"
)

const config = `# global defaults come first only when written first
IdentityFile ~/.ssh/global

Host dev
    HostName 10.0.0.5
    Port 2222
    User kernel
    IdentityFile ~/.ssh/dev_ed25519

Host dev other
    Port 9999
    IdentityFile "~/.ssh/with space"

Host box? !boxX
  Hostname=%h.lab.example
  User = ops

Match host dev
    User matched

Host *.lab
	USER lab
	port 22022

host *
    user fallback
`

func TestLookup(t *testing.T) {
	tests := []struct {
		alias string
		want  Host
	}{
		{"dev", Host{HostName: "10.0.0.5", Port: "2222", User: "kernel",
			IdentityFiles: []string{"~/.ssh/global", "~/.ssh/dev_ed25519", "~/.ssh/with space"}}},
		{"DEV", Host{HostName: "10.0.0.5", Port: "2222", User: "kernel",
			IdentityFiles: []string{"~/.ssh/global", "~/.ssh/dev_ed25519", "~/.ssh/with space"}}},
		{"other", Host{Port: "9999", User: "fallback", IdentityFiles: []string{"~/.ssh/global", "~/.ssh/with space"}}},
		{"box1", Host{HostName: "box1.lab.example", User: "ops", IdentityFiles: []string{"~/.ssh/global"}}},
		{"boxX", Host{User: "fallback", IdentityFiles: []string{"~/.ssh/global"}}},  // negated
		{"box12", Host{User: "fallback", IdentityFiles: []string{"~/.ssh/global"}}}, // ? is one character
		{"a.lab", Host{User: "lab", Port: "22022", IdentityFiles: []string{"~/.ssh/global"}}},
		{"nowhere", Host{User: "fallback", IdentityFiles: []string{"~/.ssh/global"}}},
	}
	for _, tt := range tests {
		got, err := Lookup(strings.NewReader(config), tt.alias)
		if err != nil {
			t.Fatalf("%s: %v", tt.alias, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Lookup(%q) = %+v\nwant %+v", tt.alias, got, tt.want)
		}
	}
}

func TestLookupErrors(t *testing.T) {
	if _, err := Lookup(strings.NewReader("Host a\n  IdentityFile \"~/.ssh/x\n"), "a"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("unbalanced quote: error %v, want one naming line 2", err)
	}
	long := "Host a\n  User x\n# " + strings.Repeat("x", 70000) + "\n"
	if _, err := Lookup(strings.NewReader(long), "a"); err == nil || !strings.HasPrefix(err.Error(), "line 3: ") {
		t.Errorf("a line too long: error %v, want one naming line 3", err)
	}
	if h, err := Lookup(strings.NewReader(""), "a"); err != nil || !reflect.DeepEqual(h, Host{}) {
		t.Errorf("empty config = %+v, %v", h, err)
	}
}

// Host patterns are OpenSSH's: only * and ? are special.
func TestHostPatterns(t *testing.T) {
	for _, tt := range []struct {
		pattern, alias string
		want           bool
	}{
		{"box?", "box1", true},
		{"box?", "box12", false},
		{"*.lab", "a.lab", true},
		{"*.lab", "lab", false},
		{"a*c*", "abcabc", true},
		{"a*a*a*a", "aaa", false},
		{"a*a*a*a", "aaaa", true},
		{"*", "", true},
		{"?", "", false},
		{"BOX", "box", true},
		{"foo[1]", "foo[1]", true}, // a character class for path.Match
		{"foo[1]", "foo1", false},
		{`a\b`, `a\b`, true}, // an escape for path.Match
		{"*", "a/b", true},   // path.Match's * stops at /
		{"!dev", "dev", false},
	} {
		if got := matches([]string{tt.pattern}, tt.alias); got != tt.want {
			t.Errorf("Host %s matching %q = %v, want %v", tt.pattern, tt.alias, got, tt.want)
		}
	}
}

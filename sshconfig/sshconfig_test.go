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
	if h, err := Lookup(strings.NewReader(""), "a"); err != nil || !reflect.DeepEqual(h, Host{}) {
		t.Errorf("empty config = %+v, %v", h, err)
	}
}

package sshconfig

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// FuzzLookup reads any ~/.ssh/config for any alias.
func FuzzLookup(f *testing.F) {
	f.Add(config, "box1")
	f.Fuzz(func(t *testing.T, cfg, alias string) {
		h, err := Lookup(strings.NewReader(cfg), alias)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "line ") {
				t.Fatalf("error %q: want one line that names the line", msg)
			}
			return
		}
		// Each value is an argument of the file; HostName may have %h expanded.
		values := slices.Concat([]string{h.Port, h.User}, h.IdentityFiles)
		if !strings.Contains(cfg, "%h") {
			values = append(values, h.HostName)
		}
		for _, v := range values {
			if !strings.Contains(cfg, v) {
				t.Fatalf("Lookup(%q) = %+v: %q is not in the config", alias, h, v)
			}
		}
	})
}

// quote writes v as one argument of an ssh_config line.
func quote(v string) string { return `"` + v + `"` }

// FuzzLookupRoundTrip writes a config for an alias and reads it back: a
// Host line naming the alias itself matches it, whatever it holds that
// OpenSSH's patterns do not treat specially (only * and ? are).
func FuzzLookupRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, alias, hostName, port, user, identity string) {
		for _, v := range []string{alias, hostName, port, user, identity} {
			if v == "" || strings.ContainsAny(v, "\"\r\n%") {
				return // not writable as one argument, or expanded
			}
		}
		if strings.ContainsAny(alias, "*?") || strings.HasPrefix(alias, "!") || strings.EqualFold(alias, "other") {
			return
		}
		cfg := fmt.Sprintf("Host other\n  HostName wrong\nHost %s\n  HostName %s\n  Port %s\n  User %s\n  IdentityFile %s\nHost *\n  User fallback\n  IdentityFile last\n",
			quote(alias), quote(hostName), quote(port), quote(user), quote(identity))
		h, err := Lookup(strings.NewReader(cfg), alias)
		want := Host{HostName: hostName, Port: port, User: user, IdentityFiles: []string{identity, "last"}}
		if err != nil || !reflect.DeepEqual(h, want) {
			t.Fatalf("Lookup(%q) in\n%s= %+v, %v; want %+v", alias, cfg, h, err, want)
		}
	})
}

// FuzzHostPattern checks match against a regular expression doing the same.
func FuzzHostPattern(f *testing.F) {
	f.Fuzz(func(t *testing.T, s, p string) {
		if !isASCII(s) || !isASCII(p) {
			return // ? is one byte, a regexp's . one character
		}
		re := "(?s)^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(p)) + "$"
		if got, want := match(s, p), regexp.MustCompile(re).MatchString(s); got != want {
			t.Fatalf("match(%q, %q) = %v, want %v (as %s)", s, p, got, want, re)
		}
	})
}

func isASCII(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r > unicode.MaxASCII })
}

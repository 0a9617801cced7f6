// Package sshconfig reads the few ~/.ssh/config settings kwatch honours for
// a host: HostName, Port, User and IdentityFile, under Host patterns with *
// and ? (and !negation), the way OpenSSH applies them: the first value
// obtained for a setting wins. Match blocks and Include are not supported;
// their settings are skipped.
package sshconfig

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Host is what the config says about one host; empty fields were not set.
type Host struct {
	HostName      string
	Port          string
	User          string
	IdentityFiles []string // in order, as written (~ is not expanded)
}

// Lookup returns the settings that apply to alias (the name given on the
// command line).
func Lookup(r io.Reader, alias string) (Host, error) {
	var h Host
	apply := true // settings before the first Host line apply to all hosts
	sc := bufio.NewScanner(r)
	n := 1
	for ; sc.Scan(); n++ {
		key, args, err := split(sc.Text())
		if err != nil {
			return h, fmt.Errorf("line %d: %w", n, err)
		}
		switch key {
		case "":
		case "host":
			apply = matches(args, alias)
		case "match":
			apply = false
		case "hostname":
			if apply && h.HostName == "" && len(args) > 0 {
				h.HostName = strings.ReplaceAll(args[0], "%h", alias)
			}
		case "port":
			if apply && h.Port == "" && len(args) > 0 {
				h.Port = args[0]
			}
		case "user":
			if apply && h.User == "" && len(args) > 0 {
				h.User = args[0]
			}
		case "identityfile":
			if apply && len(args) > 0 {
				h.IdentityFiles = append(h.IdentityFiles, args[0])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("line %d: %w", n, err)
	}
	return h, nil
}

// split parses one line: a keyword (lowercased) and its arguments, which may
// be quoted; "Key=value" works too.
func split(line string) (key string, args []string, err error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, nil
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return strings.ToLower(line), nil, nil
	}
	key, rest := strings.ToLower(line[:i]), strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimLeft(strings.TrimPrefix(rest, "="), " \t")
	for rest != "" {
		var arg string
		if rest[0] == '"' {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return "", nil, fmt.Errorf("unbalanced quote in %q", line)
			}
			arg, rest = rest[1:1+end], rest[2+end:]
		} else {
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			arg, rest = rest[:end], rest[end:]
		}
		args = append(args, arg)
		rest = strings.TrimLeft(rest, " \t")
	}
	return key, args, nil
}

// matches reports whether alias matches a Host line's patterns: at least one
// pattern matches and no negated one does.
func matches(patterns []string, alias string) bool {
	ok := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		if match(strings.ToLower(alias), strings.ToLower(strings.TrimPrefix(p, "!"))) {
			if neg {
				return false
			}
			ok = true
		}
	}
	return ok
}

// match is OpenSSH's match_pattern: * matches any run of characters, ?
// any one, and nothing else is special (unlike path.Match, for which [ and
// \ are). It backtracks only to the last *, so it takes at most
// len(s)·len(p) steps.
func match(s, p string) bool {
	star, resume := -1, 0 // where the last * is in p, and where s goes on after what it took
	i, j := 0, 0
	for i < len(s) {
		switch {
		case j < len(p) && p[j] == '*':
			star, resume = j, i
			j++
		case j < len(p) && (p[j] == '?' || p[j] == s[i]):
			i++
			j++
		case star >= 0: // let the last * take one more character
			resume++
			i, j = resume, star+1
		default:
			return false
		}
	}
	for j < len(p) && p[j] == '*' {
		j++
	}
	return j == len(p)
}

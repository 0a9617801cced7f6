package watcher

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"kwatch/buildfiles"
)

// rules decides which paths matter. It is immutable after New, so the
// watcher's goroutines and the orchestrator may use it concurrently.
type rules struct {
	ignore []ignoreRule // root .gitignore, then Options.Ignore; the last match wins
}

// ignoreRule is one gitignore line compiled to a regexp over the slash-separated
// path relative to the root.
type ignoreRule struct {
	re      *regexp.Regexp
	negate  bool // "!pattern" re-includes
	dirOnly bool // "pattern/" matches directories only
}

// newRules reads root/.gitignore (if any) and appends the extra patterns.
func newRules(root string, extra []string) (*rules, error) {
	var lines []string
	f, err := os.Open(filepath.Join(root, ".gitignore"))
	switch {
	case err == nil:
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			lines = append(lines, s.Text())
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading .gitignore: %w", err)
	}
	r := &rules{}
	for _, line := range append(lines, extra...) {
		if ir, ok := parseIgnore(line); ok {
			r.ignore = append(r.ignore, ir)
		}
	}
	return r, nil
}

// relevant reports whether rel names a build input that is not ignored.
func (r *rules) relevant(rel string) bool {
	rel = path.Clean(rel)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || path.IsAbs(rel) {
		return false
	}
	name := path.Base(rel)
	return buildfiles.IsInput(name) && !r.excluded(rel, false)
}

// excluded reports whether rel (a directory if isDir) is ignored by the
// built-in rules, the .gitignore or Options.Ignore. Nix's result links need
// no rule: symlinks are never followed.
func (r *rules) excluded(rel string, isDir bool) bool {
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		dir := isDir || i < len(parts)-1
		switch {
		case strings.HasPrefix(p, "."):
			return true
		case dir && p == "target": // cargo's
			return true
		case r.ignored(strings.Join(parts[:i+1], "/"), dir):
			// Like git: nothing below an ignored directory can be re-included.
			return true
		}
	}
	return false
}

// ignored applies the gitignore rules to one path, without looking at its parents.
func (r *rules) ignored(rel string, isDir bool) bool {
	ignored := false
	for _, ir := range r.ignore {
		if (!ir.dirOnly || isDir) && ir.re.MatchString(rel) {
			ignored = !ir.negate
		}
	}
	return ignored
}

// parseIgnore compiles one gitignore line. It supports comments, blank lines,
// "!" negation, a trailing "/" for directories, anchoring by a leading or
// inner "/", and the wildcards "*", "?", "[...]" and "**".
func parseIgnore(line string) (ignoreRule, bool) {
	line = strings.TrimSuffix(line, "\r")
	if !strings.HasSuffix(line, `\ `) {
		line = strings.TrimRight(line, " \t")
	}
	if line == "" || line[0] == '#' {
		return ignoreRule{}, false
	}
	var ir ignoreRule
	if line[0] == '!' {
		ir.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") {
		ir.dirOnly = true
		line = strings.TrimRight(line, "/")
	}
	// A slash anywhere but at the end anchors the pattern to the root;
	// otherwise it matches a name at any depth.
	prefix := "^(?:.*/)?"
	if strings.Contains(line, "/") {
		prefix = "^"
		line = strings.TrimLeft(line, "/")
	}
	if line == "" {
		return ignoreRule{}, false
	}
	re, err := regexp.Compile(prefix + globRegexp(line) + "$")
	if err != nil {
		return ignoreRule{}, false
	}
	ir.re = re
	return ir, true
}

// globRegexp translates a gitignore glob into a regexp body.
func globRegexp(glob string) string {
	var b strings.Builder
	for i := 0; i < len(glob); i++ {
		c := glob[i]
		switch {
		case strings.HasPrefix(glob[i:], "**") && (i == 0 || glob[i-1] == '/') &&
			(i+2 == len(glob) || glob[i+2] == '/'):
			if i+2 < len(glob) {
				b.WriteString("(?:.*/)?") // "**/": zero or more directories
				i += 2
			} else {
				b.WriteString(".*") // trailing "/**": everything inside
				i++
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '\\' && i+1 < len(glob):
			i++
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		case c == '[':
			end := strings.IndexByte(glob[i+1:], ']')
			if end < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := glob[i+1 : i+1+end]
			i += end + 1
			b.WriteByte('[')
			if strings.HasPrefix(class, "!") || strings.HasPrefix(class, "^") {
				b.WriteByte('^')
				class = class[1:]
			}
			for j := 0; j < len(class); j++ {
				if class[j] == '-' {
					b.WriteByte('-')
				} else {
					b.WriteString(regexp.QuoteMeta(class[j : j+1]))
				}
			}
			b.WriteByte(']')
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	return b.String()
}

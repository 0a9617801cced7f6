package replay

import (
	"path/filepath"
	"slices"
	"strings"
)

// The fast path reads the shape of a recorded line, never the rule that
// wrote it: which of its commands are no-ops, and which only write a
// target's record (a redirect into .NAME.cmd), so that they may run after
// the module was handed on. A line it cannot read plainly is kept whole.

// segment is one top-level command of a line (between ";" or newlines,
// outside quotes, groups and compound commands).
type segment struct {
	text  string
	words []string // unquoted words; operators as they are
}

// compound words open or close a nesting at the start of a command.
var (
	opens  = map[string]bool{"if": true, "case": true, "for": true, "while": true, "until": true, "{": true}
	closes = map[string]bool{"fi": true, "esac": true, "done": true, "}": true}
	// after these a new command starts
	starters = map[string]bool{"then": true, "do": true, "else": true, "elif": true, "!": true}
)

// segments splits a line into its top-level commands; ok is false if the
// line cannot be read plainly (unbalanced, or a construct not read here).
func segments(line string) (segs []segment, ok bool) {
	depth, start := 0, 0
	var words []string
	atStart := true
	flush := func(end int) {
		if t := strings.TrimSpace(line[start:end]); t != "" {
			segs = append(segs, segment{text: t, words: words})
		}
		words, start, atStart = nil, end+1, true
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '\\' && i+1 < len(line) && line[i+1] == '\n':
			i += 2
		case c == '\n' || c == ';':
			if c == ';' && i+1 < len(line) && line[i+1] == ';' {
				return nil, false // case branches
			}
			if depth == 0 {
				flush(i)
			} else {
				words = append(words, string(c))
				atStart = true
			}
			i++
		case c == '&' || c == '|':
			op := string(c)
			if i+1 < len(line) && line[i+1] == c {
				op += op
			}
			words = append(words, op)
			atStart = true
			i += len(op)
		case c == '(' || c == ')':
			if c == '(' {
				depth++
			} else {
				depth--
			}
			words = append(words, string(c))
			atStart = c == '('
			i++
		case c == '>' || c == '<':
			op := string(c)
			if i+1 < len(line) && (line[i+1] == '>' || line[i+1] == '&') {
				op += string(line[i+1])
			}
			words = append(words, op)
			i += len(op)
		default:
			w, n, good := word(line[i:])
			if !good {
				return nil, false
			}
			// A file descriptor number right before a redirect: 2>, 1>&2.
			if j := i + n; j < len(line) && (line[j] == '>' || line[j] == '<') && strings.Trim(w, "0123456789") == "" {
				i = j
				continue
			}
			if atStart && opens[w] {
				depth++
			} else if atStart && closes[w] {
				depth--
			}
			atStart = starters[w] || (atStart && opens[w])
			words = append(words, w)
			i += n
		}
		if depth < 0 {
			return nil, false
		}
	}
	if depth != 0 {
		return nil, false
	}
	flush(len(line))
	return segs, true
}

// word reads one shell word at the start of s: its text without quotes,
// and its length in s. Command substitutions and backquotes are kept as
// they are.
func word(s string) (w string, n int, ok bool) {
	var b strings.Builder
	for n < len(s) {
		c := s[n]
		switch {
		case strings.IndexByte(" \t\n;&|()<>", c) >= 0:
			return b.String(), n, true
		case c == '\\' && n+1 < len(s):
			b.WriteByte(s[n+1])
			n += 2
		case c == '\'':
			end := strings.IndexByte(s[n+1:], '\'')
			if end < 0 {
				return "", 0, false
			}
			b.WriteString(s[n+1 : n+1+end])
			n += end + 2
		case c == '"':
			n++
			for n < len(s) && s[n] != '"' {
				if s[n] == '`' || strings.HasPrefix(s[n:], "$(") {
					return "", 0, false
				}
				if s[n] == '\\' && n+1 < len(s) && strings.IndexByte("$`\"\\\n", s[n+1]) >= 0 {
					n++
				}
				b.WriteByte(s[n])
				n++
			}
			if n >= len(s) {
				return "", 0, false
			}
			n++
		case c == '$' && n+1 < len(s) && s[n+1] == '(', c == '`':
			return "", 0, false // not read here: the line stays whole
		default:
			b.WriteByte(c)
			n++
		}
	}
	return b.String(), n, true
}

// noop reports whether a line does nothing make's output or files would
// show: only `set`, `trap`, `:` or `true` (what Kbuild's $(cmd) leaves of
// an empty command, and if_changed's "nothing to do").
func noop(line string) bool {
	segs, ok := segments(line)
	if !ok {
		return false
	}
	for _, s := range segs {
		if len(s.words) > 0 && !slices.Contains([]string{":", "true", "set", "trap"}, s.words[0]) {
			return false
		}
	}
	return true
}

// recordTail splits a line whose last commands only write the record file
// (absolute, resolved against the line's dir) into what comes before them
// and them: each of those commands is a printer or a program whose output
// goes to the record (> record), or echo and printf in a group appending
// to it, or the removal of one file (Kbuild's dependency file). tail is ""
// if the line does not end so; removes names the files the tail removes.
func recordTail(line, dir, record string) (head, tail string, removes []string) {
	segs, ok := segments(line)
	if !ok {
		return line, "", nil
	}
	i := len(segs)
	writes := false
	for i > 0 {
		s := segs[i-1]
		if f, ok := removal(s, dir); ok {
			removes = append(removes, f)
		} else if writesOnly(s, dir, record) {
			writes = true
		} else {
			break
		}
		i--
	}
	if !writes {
		return line, "", nil
	}
	var h, t []string
	for j, s := range segs {
		if j < i {
			h = append(h, s.text)
		} else {
			t = append(t, s.text)
		}
	}
	return strings.Join(h, "; "), strings.Join(t, "; "), removes
}

// removal reports the file a `rm -f FILE` removes.
func removal(s segment, dir string) (string, bool) {
	if len(s.words) == 3 && s.words[0] == "rm" && s.words[1] == "-f" {
		return resolve(dir, s.words[2]), true
	}
	return "", false
}

// writesOnly reports whether a command writes nothing but the record: its
// only redirect sends its output there. A program other than echo and
// printf may only write the record whole (>), not append to it: what such
// a program appends (symbol CRCs) is read downstream.
func writesOnly(s segment, dir, record string) bool {
	w := s.words
	n := len(w)
	if n < 3 || (w[n-2] != ">" && w[n-2] != ">>") || resolve(dir, w[n-1]) != record {
		return false
	}
	body := w[:n-2]
	if body[0] != "{" {
		return !slices.ContainsFunc(body, isOperator) && !opens[body[0]] && !closes[body[0]] && !starters[body[0]] &&
			(w[n-2] == ">" || printer(body[0]))
	}
	// { echo ...; printf ...; }: every command in the group prints.
	if body[len(body)-1] != "}" {
		return false
	}
	first := true
	for _, x := range body[1 : len(body)-1] {
		switch {
		case x == ";" || x == "\n":
			first = true
		case isOperator(x) || (first && !printer(x)):
			return false
		default:
			first = false
		}
	}
	return true
}

func isOperator(w string) bool {
	return slices.Contains([]string{"<", ">", ">>", "<&", ">&", "|", "||", "&&", "&", "(", ")"}, w)
}

func printer(cmd string) bool { return cmd == "echo" || cmd == "printf" }

// resolve makes a path in a line absolute against the line's dir.
func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// outputs returns the files a line redirects output into, resolved against
// its dir: not /dev/null, nor a descriptor (>&2). ok is false when the line
// cannot be read plainly or a redirect's target is not a plain path (a
// variable, a glob).
func outputs(line, dir string) (files []string, ok bool) {
	segs, ok := segments(line)
	if !ok {
		return nil, false
	}
	for _, s := range segs {
		for i, w := range s.words {
			if !strings.HasPrefix(w, ">") {
				continue
			}
			if i+1 >= len(s.words) {
				return nil, false
			}
			f := s.words[i+1]
			switch {
			case f == "/dev/null":
			case strings.HasSuffix(w, "&") && (f == "-" || strings.Trim(f, "0123456789") == ""):
			case f == "" || strings.ContainsAny(f, "$`*?[~") || isOperator(f):
				return nil, false
			default:
				files = append(files, resolve(dir, f))
			}
		}
	}
	return files, true
}

// namesOnlyAsOutput reports whether a line names file (by its base name)
// only as a file it redirects output into: it does not read it.
func namesOnlyAsOutput(line, dir, file string) bool {
	segs, ok := segments(line)
	if !ok {
		return false
	}
	name := filepath.Base(file)
	for _, s := range segs {
		for i, w := range s.words {
			if strings.Contains(w, name) && (i == 0 || !strings.HasPrefix(s.words[i-1], ">") || resolve(dir, w) != file) {
				return false
			}
		}
	}
	return true
}

package builder

import (
	"bytes"
	"io"
	"regexp"
	"strings"
)

// maxDiagnostics is how many lines of a failed build the user gets: the first
// errors matter, the rest are usually consequences.
const maxDiagnostics = 10

var (
	// gcc and clang: "/abs/hello.c:12:5: error: expected ';' ...".
	ccDiag = regexp.MustCompile(`^[^\s:][^:]*:\d+:(?:\d+:)? (fatal error|error|warning): `)
	// modpost: `ERROR: modpost: "foo" [/abs/hello.ko] undefined!`.
	modpostDiag = regexp.MustCompile(`^(ERROR|WARNING): modpost: `)
	// rustc: "error[E0308]: mismatched types", then "  --> /abs/x.rs:26:26".
	rustHead  = regexp.MustCompile(`^(error|warning)(\[E\d+\])?: `)
	rustArrow = regexp.MustCompile(`^\s*--> (\S+:\d+:\d+)$`)
	// rustc's summary lines, which repeat nothing useful.
	rustNoise = regexp.MustCompile(`^(error: aborting due to|error: could not compile|warning: \d+ warnings? emitted)`)
	makeFail  = regexp.MustCompile(`^make(\[\d+\])?: \*\*\* `)
	ansi      = regexp.MustCompile("\x1b\\[[0-9;]*[mK]")
)

// A toolchain hint: when a line contains any of match, the build's Error gets
// the hint, with {rustc} and {kdir} filled in. Earlier entries win.
type hintRule struct {
	match []string
	hint  string
}

var hintRules = []hintRule{
	{[]string{"custom targets are unstable"},
		"a rustup rustc is being used: pass --rustc /usr/bin/rustc (the one the kernel was built with)"},
	{[]string{"error[E0463]", "error[E0461]", "error[E0514]", "error[E0786]", "error loading target specification"},
		"the kernel's Rust crates are missing or were built by another rustc: build the module with the same rustc as the kernel (--rustc, now {rustc})"},
	{[]string{`target.json" does not exist`, "No rule to make target 'scripts/target.json'", "No rule to make target 'rust/target.json'"},
		"the kernel at {kdir} was not built with CONFIG_RUST=y"},
	{[]string{"is too new. This may or may not work", "is too old.", "the Rust compiler differs from the one used to build the kernel"},
		"rustc {rustc} is not the version the kernel at {kdir} was built with: pass --rustc with that one"},
}

// scanner passes a build's output through to out and collects its diagnostics.
type scanner struct {
	out      io.Writer
	inDir    *regexp.Regexp // "/abs/dir/" before a file name, stripped from paths
	rustc    string
	kdir     string
	partial  []byte
	errors   []string
	warnings []string
	makeLine string
	pending  string // a rustc header waiting for its "-->" line
	hint     int    // index into hintRules, len(hintRules) if none matched
	seen     map[string]bool
}

func newScanner(dir string, out io.Writer, rustc, kdir string) *scanner {
	inDir := regexp.MustCompile(regexp.QuoteMeta(dir+"/") + `([^\s'"])`)
	return &scanner{out: out, inDir: inDir, rustc: rustc, kdir: kdir, hint: len(hintRules), seen: map[string]bool{}}
}

func (s *scanner) Write(p []byte) (int, error) {
	// The log is for the user's eyes: a broken terminal must not fail the build.
	s.out.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

// flush handles an unterminated last line and a rustc header that ended the output.
func (s *scanner) flush() {
	if len(s.partial) > 0 {
		s.line(string(s.partial))
		s.partial = nil
	}
	s.resolvePending("")
}

func (s *scanner) line(l string) {
	l = strings.TrimRight(ansi.ReplaceAllString(l, ""), "\r")
	for i := 0; i < s.hint; i++ {
		for _, m := range hintRules[i].match {
			if strings.Contains(l, m) {
				s.hint = i
			}
		}
	}
	if s.resolvePending(l) {
		return
	}
	switch {
	case ccDiag.MatchString(l):
		s.add(strings.Contains(ccDiag.FindStringSubmatch(l)[1], "error"), l)
	case modpostDiag.MatchString(l):
		s.add(strings.HasPrefix(l, "ERROR"), l)
	case rustHead.MatchString(l) && !rustNoise.MatchString(l):
		s.pending = l
	case makeFail.MatchString(l) && s.makeLine == "":
		// The first make failure is the innermost one, the others only repeat it.
		s.makeLine = s.short(l)
	}
}

// resolvePending files a waiting rustc header, joined with its location if l
// is the "-->" line. It reports whether l was consumed.
func (s *scanner) resolvePending(l string) bool {
	if s.pending == "" {
		return false
	}
	head := s.pending
	s.pending = ""
	isErr := strings.HasPrefix(head, "error")
	if m := rustArrow.FindStringSubmatch(l); m != nil {
		s.add(isErr, m[1]+": "+head)
		return true
	}
	s.add(isErr, head)
	return false
}

func (s *scanner) add(isErr bool, l string) {
	l = s.short(l)
	if s.seen[l] {
		return
	}
	s.seen[l] = true
	list := &s.warnings
	if isErr {
		list = &s.errors
	}
	if len(*list) < maxDiagnostics {
		*list = append(*list, l)
	}
}

func (s *scanner) short(l string) string { return s.inDir.ReplaceAllString(l, "$1") }

// failure builds the Error for a build that ended with err: errors first, then
// make's own complaint if no compiler said anything, then warnings.
func (s *scanner) failure(err error) *Error {
	var diags []string
	diags = append(diags, s.errors...)
	if len(diags) == 0 && s.makeLine != "" {
		diags = append(diags, s.makeLine)
	}
	diags = append(diags, s.warnings...)
	if len(diags) > maxDiagnostics {
		diags = diags[:maxDiagnostics]
	}
	e := &Error{Diagnostics: diags, Err: err}
	if s.hint < len(hintRules) {
		e.Fix = strings.NewReplacer("{rustc}", s.rustc, "{kdir}", s.kdir).Replace(hintRules[s.hint].hint)
	}
	return e
}

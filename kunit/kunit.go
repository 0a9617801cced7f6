// Package kunit reads the KTAP that KUnit prints to the kernel log while a
// module's test suites run (inside insmod) and says how each case went.
//
// It parses by structure, not by column: Linux 6.1 indents a module's suite
// header and not its result line, newer kernels add a top-level header, and
// unrelated kernel log lines come in between. A level opens with a version
// line and closes with a result line that is less indented than it, or that
// comes after its plan is complete.
package kunit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Status is how a case went.
type Status string

const (
	Pass  Status = "pass"
	Fail  Status = "fail"
	Skip  Status = "skip"
	Crash Status = "crash" // it oopsed, or the output ended before its result
)

// Case is one test case's result.
type Case struct {
	Suite, Name string // Name "" is the suite itself (its init failed, or all of it was skipped)
	Status      Status
	Param       string // a parameterised case: the first parameter it failed with
	File        string // a failure: where its first failed expectation or assertion is
	Line        int
	Message     string // a failure's expected/actual text, a skip's reason, what crashed
}

// Summary counts cases by status.
type Summary struct{ Passed, Failed, Skipped, Crashed int }

// Count sums cases up.
func Count(cases []Case) Summary {
	var s Summary
	for _, c := range cases {
		switch c.Status {
		case Pass:
			s.Passed++
		case Fail:
			s.Failed++
		case Skip:
			s.Skipped++
		case Crash:
			s.Crashed++
		}
	}
	return s
}

// maxUnfinished caps the cases an unfinished suite reports crashed: its plan
// comes from the guest and may claim any number.
const maxUnfinished = 1000

// Parser reads one insmod's kernel log records, in order.
type Parser struct {
	levels []*level // open levels; [0] is the top, [1] a suite, [2] a parameterised case
	cases  []Case
	cont   *failure // a one-line failure record whose text may follow as lines of their own
	contAt int      // its indentation
}

// level is one KTAP test level that is open.
type level struct {
	indent int
	header bool   // a version line opened it (the top has one only on newer kernels)
	name   string // from "# Subtest: name"
	plan   int    // -1 until a plan line
	done   int    // results seen at this level
	first  int    // index in cases of its first case
	fail   *failure
	note   string   // the last "# name: text" diagnostic since the last result
	param  *failure // a parameterised case: its first failing parameter
}

// failure is a failed expectation or assertion.
type failure struct {
	param, file, message string
	line                 int
}

// NewParser returns a parser at the start of a module's output.
func NewParser() *Parser {
	return &Parser{levels: []*level{{plan: -1}}}
}

var (
	versionRE = regexp.MustCompile(`^K?TAP version \d+$`)
	planRE    = regexp.MustCompile(`^1\.\.(\d+)$`)
	resultRE  = regexp.MustCompile(`^(ok|not ok) (\d+)(?: (?:- )?(.*))?$`)
	totalsRE  = regexp.MustCompile(`^# (?:\S+|Totals): pass:\d+ fail:\d+ skip:\d+ total:\d+$`)
	failedRE  = regexp.MustCompile(`^# \S+: (?:EXPECTATION|ASSERTION) FAILED at (.+):(\d+)$`)
	noteRE    = regexp.MustCompile(`^# \S+: (.+)$`)
)

// Feed reads one kernel log record, which may span lines (a failed
// expectation is one record with its expected and actual lines). It reports
// whether the record was KTAP.
func (p *Parser) Feed(record string) bool {
	lines := strings.Split(strings.TrimRight(record, "\n"), "\n")
	indent, text := split(lines[0])
	if m := failedRE.FindStringSubmatch(text); m != nil {
		p.cont = nil
		line, err := strconv.Atoi(m[2])
		if err != nil {
			return false
		}
		f := &failure{file: m[1], line: line}
		for _, l := range lines[1:] {
			f.add(l)
		}
		if top := p.top(); top.fail == nil {
			top.fail = f
		}
		if len(lines) == 1 {
			p.cont, p.contAt = f, indent
		}
		return true
	}
	ktap := false
	for _, l := range lines {
		ktap = p.line(l) || ktap
	}
	return ktap
}

// add appends one line of a failure's text.
func (f *failure) add(line string) {
	if line = strings.TrimSpace(line); line == "" {
		return
	}
	if f.message != "" {
		f.message += "\n"
	}
	f.message += line
}

func split(line string) (indent int, text string) {
	text = strings.TrimLeft(line, " \t")
	return len(line) - len(text), strings.TrimRight(text, " \t\r")
}

func (p *Parser) top() *level { return p.levels[len(p.levels)-1] }

// line reads one line that is not a failure's first.
func (p *Parser) line(l string) bool {
	indent, text := split(l)
	ktap := versionRE.MatchString(text) || planRE.MatchString(text) || resultRE.MatchString(text) || strings.HasPrefix(text, "# ")
	if p.cont != nil {
		if !ktap && text != "" && indent > p.contAt {
			p.cont.add(text)
			return true
		}
		p.cont = nil
	}
	top := p.top()
	switch {
	case versionRE.MatchString(text):
		if len(p.levels) == 1 && !top.header && indent == 0 && top.plan < 0 && top.done == 0 {
			top.header = true // a newer kernel's top-level header
		} else {
			p.levels = append(p.levels, &level{indent: indent, header: true, plan: -1, first: len(p.cases)})
		}
	case planRE.MatchString(text):
		if n, err := strconv.Atoi(planRE.FindStringSubmatch(text)[1]); err == nil && top.plan < 0 && top.done == 0 {
			top.plan = n
		}
	case resultRE.MatchString(text):
		m := resultRE.FindStringSubmatch(text)
		p.result(indent, m[1] == "ok", m[3])
	case strings.HasPrefix(text, "# Subtest: "):
		if top.name == "" {
			top.name = strings.TrimSpace(strings.TrimPrefix(text, "# Subtest: "))
		}
	case totalsRE.MatchString(text):
	case noteRE.MatchString(text):
		top.note = strings.TrimSpace(noteRE.FindStringSubmatch(text)[1])
	}
	return ktap
}

// result reads a result line: it closes the open level it describes, if any.
func (p *Parser) result(indent int, ok bool, rest string) {
	name, directive, _ := strings.Cut(rest, " # ")
	name = strings.TrimSpace(name)
	var child *level
	if n := len(p.levels); n > 1 {
		top := p.levels[n-1]
		if indent < top.indent || (top.plan >= 0 && top.done >= top.plan) || (top.plan < 0 && name == top.name && indent <= top.indent) {
			child, p.levels = top, p.levels[:n-1]
		}
	}
	at := p.top()
	depth := len(p.levels) - 1
	status, msg := outcome(ok, directive, at.note)
	f := at.fail
	if child != nil {
		if child.name == "" {
			child.name = name
		}
		if f == nil {
			f = child.fail
		}
		if child.param != nil {
			f = child.param
		}
	}
	at.fail, at.note = nil, ""
	at.done++
	switch {
	case depth == 0: // a suite's result
		if child != nil {
			for i := child.first; i < len(p.cases); i++ {
				p.cases[i].Suite = child.name
			}
			if len(p.cases) > child.first || status == Pass {
				return
			}
			msg = firstOf(msg, child.note)
		}
		p.cases = append(p.cases, Case{Suite: name, Status: status, Message: msg})
	case depth == 1: // a case's result
		c := Case{Suite: at.name, Name: name, Status: status, Message: msg}
		if f != nil && status != Pass && status != Skip {
			c.Param, c.File, c.Line, c.Message = f.param, f.file, f.line, firstOf(f.message, msg)
		}
		p.cases = append(p.cases, c)
	default: // a parameter's result
		if status == Fail && at.param == nil {
			at.param = &failure{param: name, message: msg}
			if f != nil {
				at.param.file, at.param.line, at.param.message = f.file, f.line, firstOf(f.message, msg)
			}
		}
	}
}

// outcome is a result line's status: the directive decides first, then a
// crash the last diagnostic tells of, then ok or not ok. TODO and XFAIL
// mark a case not expected to pass: it counts as skipped, as in KTAP's
// own tooling.
func outcome(ok bool, directive, note string) (Status, string) {
	word, reason, _ := strings.Cut(strings.TrimSpace(directive), " ")
	switch strings.ToUpper(word) {
	case "SKIP":
		return Skip, strings.TrimSpace(reason)
	case "TODO", "XFAIL":
		return Skip, strings.TrimSpace(strings.ToUpper(word) + " " + reason)
	case "TIMEOUT", "ERROR":
		return Fail, strings.TrimSpace(strings.ToLower(word) + " " + reason)
	}
	switch {
	case strings.Contains(note, "try faulted"):
		return Crash, note
	case ok:
		return Pass, ""
	}
	return Fail, note
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Finish ends the output and returns every case's result. A suite still
// open has stopped early, as when a case crashed the kernel: the case that
// ran is crashed, and so are those after it, which never ran.
func (p *Parser) Finish() []Case {
	cases := p.cases
	if len(p.levels) > 1 {
		suite := p.levels[1]
		name, next := fmt.Sprintf("case %d", suite.done+1), suite.done+2
		if len(p.levels) > 2 { // inside a parameterised case: its name is known
			name = p.levels[2].name
		}
		cases = append(cases, Case{Suite: suite.name, Name: name, Status: Crash, Message: "did not finish"})
		for i := next; i <= suite.plan && i-next < maxUnfinished; i++ {
			cases = append(cases, Case{Suite: suite.name, Name: fmt.Sprintf("case %d", i), Status: Crash, Message: "not run: an earlier case did not finish"})
		}
	}
	p.levels, p.cases = p.levels[:1], nil
	return cases
}

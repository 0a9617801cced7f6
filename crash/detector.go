package crash

import (
	"fmt"
	"regexp"
	"strings"
)

// maxLines caps Report.Lines; the head of a report (title, RIP, trace) is
// what explains it, so the rest is cut, except the last maxEndLines of the
// lines that end it (a panic's, the end marker): a panic printed in a loop
// must not grow a report without bound.
const (
	maxLines    = 60
	maxEndLines = 5
)

// Detector groups log lines into reports. It is fed line by line and returns
// each report once its block is complete: at "---[ end trace ...]---", at
// "---[ end Kernel panic ...]---", when the next report starts, or when Flush
// is called (the caller flushes after ~1s of silence or when the VM died). A
// Fatal line inside an Oops block upgrades the block's severity: an oops
// followed by "Kernel panic - not syncing: Fatal exception". Lines that are not
// part of a crash are ignored.
//
// Use one Detector per channel (serial console, /dev/kmsg): once a line with
// a kernel timestamp has been seen, lines without one are taken as shell
// output and ignored. The zero value is ready to use; it is not safe for
// concurrent use.
type Detector struct {
	console bool // lines carry timestamps
	open    *block
}

type block struct {
	severity Severity
	title    string
	lines    []string
	end      []string // past maxLines: the newest ending lines, at most maxEndLines
	dropped  int
	// A stack dump ended ("</TASK>"), so a header now starts a new report.
	// Before it, a header is the next part of this one: a Rust panic or list
	// corruption message followed by its BUG, a NULL dereference by "Oops:".
	stackDone bool
	// The block's end marker was seen but x86 still prints a register
	// summary after an oops, and then maybe the panic that belongs to it.
	ended bool
	// Newer kernels print a Rust panic's message on the line after its location.
	titleNext bool
}

const (
	cutHere  = "------------[ cut here ]------------"
	endTrace = "---[ end trace "
	endPanic = "---[ end Kernel panic"
)

var (
	// The register summary x86 prints after "end trace" ("executive summary").
	summaryRe = regexp.MustCompile(`^(?:RIP|Code|RSP|RAX|RDX|RBP|R10|R13|FS|GS|CS|CR2|DR0|DR3|DR6|PKRU):`)
	rustAtRe  = regexp.MustCompile(`rust_kernel: panicked at [^']*:$`)
)

// separator is the "=====" line that ends KASAN, UBSAN and KCSAN reports and
// starts SLUB and lockdep ones.
func separator(text string) bool {
	return len(text) >= 20 && strings.Trim(text, "=") == ""
}

// Feed adds one log line and returns the reports it completed.
func (d *Detector) Feed(line string) []Report {
	c := clean(line)
	if c.first {
		d.console = true
	}
	if d.console && !c.marked {
		return nil
	}
	text := c.text
	sev, title := classify(text)
	starts := sev > None || strings.Contains(text, cutHere)

	var out []Report
	if b := d.open; b != nil {
		switch {
		case sev == Fatal: // panic_on_oops, panic_on_warn, softlockup_panic: the panic belongs to the open report
			b.ended = false
			b.add(text, sev, title)
			if strings.Contains(text, endPanic) {
				out = append(out, d.close())
			}
			return out
		case b.ended: // only the register summary or the panic can still join
			if summaryRe.MatchString(text) {
				return nil
			}
			out = append(out, d.close())
		case starts && b.stackDone:
			out = append(out, d.close())
		default:
			b.add(text, sev, title)
			if strings.Contains(text, endTrace) || separator(text) {
				if b.severity < Oops {
					out = append(out, d.close())
				} else {
					b.ended = true
				}
			}
			return out
		}
	}
	if !starts {
		return out
	}
	d.open = &block{}
	d.open.add(text, sev, title)
	if strings.Contains(text, endPanic) {
		out = append(out, d.close())
	}
	return out
}

// Flush returns the open report, if any, as it is.
func (d *Detector) Flush() []Report {
	if d.open == nil {
		return nil
	}
	return []Report{d.close()}
}

// Pending reports whether a block is open.
func (d *Detector) Pending() bool { return d.open != nil }

func (b *block) add(text string, sev Severity, title string) {
	switch {
	case b.titleNext:
		b.titleNext = false
		if sev == None && !strings.Contains(text, cutHere) {
			b.title += " " + strings.TrimSpace(text)
		}
	case b.title == "" && sev > None:
		b.title = title
		b.titleNext = rustAtRe.MatchString(title)
	}
	b.severity = max(b.severity, sev)
	if strings.TrimSpace(text) == "</TASK>" {
		b.stackDone = true
	}
	if len(b.lines) < maxLines {
		b.lines = append(b.lines, text)
		return
	}
	if sev != Fatal && !strings.Contains(text, endTrace) && !separator(text) {
		b.dropped++
		return
	}
	b.end = append(b.end, text)
	if len(b.end) > maxEndLines {
		b.end = b.end[1:]
		b.dropped++
	}
}

func (d *Detector) close() Report {
	b := d.open
	d.open = nil
	if b.dropped > 0 {
		b.lines = append(b.lines, fmt.Sprintf("[... %d lines not shown ...]", b.dropped))
	}
	b.lines = append(b.lines, b.end...)
	r := Report{Severity: b.severity, Title: b.title, Lines: b.lines}
	if r.Title == "" {
		// A "cut here" block without a header kwatch knows: still a WARN or BUG.
		r.Severity = max(r.Severity, Warning)
		// The first line that says something after it says what it is.
		r.Title = b.lines[0]
		for _, l := range b.lines[1:] {
			if l = strings.TrimSpace(l); l != "" {
				r.Title = l
				break
			}
		}
	}
	r.Module, r.Function, r.Return = locate(b.lines)
	if r.Module == "" {
		r.Module = anyModule(b.lines)
	}
	return r
}

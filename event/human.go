package event

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/fatih/color"

	"kwatch/kmsg"
	"kwatch/kunit"
)

// Human reports status lines for a person. A build's output is kept, not
// shown: a good build needs no more than its status line, a failed one gets
// its output's tail above the diagnostics.
type Human struct {
	mu    sync.Mutex
	w     io.Writer
	build bytes.Buffer // the running build's output
	wd    string       // the working directory, which shortens a test's file name
}

// NewHuman reports to w; colours follow NO_COLOR and whether w is a terminal
// (fatih/color decides).
func NewHuman(w io.Writer) *Human {
	wd, _ := os.Getwd()
	return &Human{w: w, wd: wd}
}

// BuildLog is where the builder writes its output.
func (r *Human) BuildLog() io.Writer { return buildLog{r} }

type buildLog struct{ r *Human }

func (b buildLog) Write(p []byte) (int, error) {
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	return b.r.build.Write(p)
}

// failedBuildLines is how much of a failed build's output is shown.
const failedBuildLines = 30

var (
	green  = color.New(color.FgGreen, color.Bold).SprintFunc()
	red    = color.New(color.FgRed, color.Bold).SprintFunc()
	yellow = color.New(color.FgYellow).SprintFunc()
	dim    = color.New(color.Faint).SprintFunc()
	cyan   = color.New(color.FgCyan).SprintFunc()
)

func (r *Human) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.w
	e = printableEvent(e)
	switch e.Type {
	case KindBuildStart:
		r.build.Reset()
		fmt.Fprintf(w, "%s %s\n", cyan("⟳"), dim("building "+e.Message))
	case KindBuildOK:
	case KindBuildFailed:
		lines := strings.Split(strings.TrimRight(r.build.String(), "\n"), "\n")
		if len(lines) > failedBuildLines {
			fmt.Fprintf(w, "  %s\n", dim(fmt.Sprintf("│ … %d earlier lines", len(lines)-failedBuildLines)))
			lines = lines[len(lines)-failedBuildLines:]
		}
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", dim("│ "+l))
		}
		fmt.Fprintf(w, "%s build failed in %s\n", red("✗"), ms(e.BuildMS))
		for _, d := range e.Diagnostics {
			fmt.Fprintf(w, "  %s\n", red(d))
		}
		if len(e.Diagnostics) == 0 && e.Message != "" {
			fmt.Fprintf(w, "  %s\n", red(e.Message))
		}
		if e.Hint != "" {
			fmt.Fprintf(w, "  %s %s\n", yellow("hint:"), e.Hint)
		}
		fmt.Fprintf(w, "  %s\n", dim("the previously loaded module stays loaded"))
	case KindLoaded:
		build := ms(e.BuildMS)
		if e.Path != "" {
			build += " · " + e.Path
		}
		if e.Fallback != "" {
			build += ": " + e.Fallback
		}
		fmt.Fprintf(w, "%s %s loaded in %s %s\n", green("✓"), e.Module, ms(e.TotalMS),
			dim(fmt.Sprintf("(build %s · upload %s · reload %s)", build, ms(e.UploadMS), ms(e.ReloadMS))))
	case KindLoadFailed:
		fmt.Fprintf(w, "%s %s not loaded: %s\n", red("✗"), e.Module, e.Message)
		for _, h := range e.Holders {
			fmt.Fprintf(w, "  %s %s\n", yellow("held:"), h)
		}
		if e.Hint != "" {
			fmt.Fprintf(w, "  %s %s\n", yellow("hint:"), e.Hint)
		}
	case KindRunOutput:
		status := green("ok")
		switch {
		case e.Message != "": // stopped or killed before it ended
			status = yellow(e.Message)
		case e.Exit != nil && *e.Exit != 0:
			status = red(fmt.Sprintf("exit %d", *e.Exit))
		}
		fmt.Fprintf(w, "%s %s %s\n", cyan("$"), e.Command, dim("→ ")+status)
		for _, l := range strings.Split(strings.TrimRight(e.Output, "\n"), "\n") {
			if l != "" {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
	case KindKernelLog:
		if e.record != nil {
			fmt.Fprintln(w, kmsg.Format(*e.record))
		} else {
			fmt.Fprintln(w, e.Message)
		}
	case KindCrash:
		humanCrash(w, e)
	case KindKUnitCase:
		r.kunitCase(e)
	case KindKUnitSum:
		humanKUnitSummary(w, e)
	case KindVMReady:
		fmt.Fprintf(w, "%s %s\n", green("●"), e.Message)
	case KindError, KindFastPathBug:
		fmt.Fprintf(w, "%s %s\n", red("kwatch: error:"), e.Message)
		if e.Hint != "" {
			fmt.Fprintf(w, "%s %s\n", yellow("kwatch: hint:"), e.Hint)
		}
	default: // notice
		fmt.Fprintf(w, "%s %s\n", dim("kwatch:"), e.Message)
	}
}

// printableEvent returns e with the control characters in its texts made
// visible. Most of them come from the guest (its kernel log, --run output,
// insmod's errors), and an escape sequence there must not clear the screen,
// move the cursor or recolour the terminal. kwatch adds its own colours after.
func printableEvent(e Event) Event {
	for _, s := range []*string{&e.Module, &e.Message, &e.Hint, &e.Command, &e.Output, &e.Title, &e.Function, &e.UserModule,
		&e.Suite, &e.Case, &e.Param, &e.File} {
		*s = printable(*s)
	}
	for _, l := range []*[]string{&e.Diagnostics, &e.Lines, &e.Holders} {
		*l = slices.Clone(*l)
		for i := range *l {
			(*l)[i] = printable((*l)[i])
		}
	}
	if e.record != nil {
		rec := *e.record
		rec.Message = printable(rec.Message)
		e.record = &rec
	}
	return e
}

// printable replaces each control character but newline and tab, and each
// byte that is not UTF-8 (a lone 0x9b is CSI to some terminals), with a \xNN
// escape, the form the kernel itself uses in /dev/kmsg. A CRLF line end
// becomes a newline.
func printable(s string) string {
	if !strings.ContainsFunc(s, isControl) && utf8.ValidString(s) {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func isControl(r rune) bool { return r != '\n' && r != '\t' && unicode.IsControl(r) }

// crashShown caps the report lines a person sees; --json has them all.
const crashShown = 25

var crashWhat = map[string]string{
	"warning": "kernel warning (the guest is fine)",
	"oops":    "kernel oops (the guest is unreliable until it restarts)",
	"panic":   "kernel panic (the guest is dead)",
}

// humanCrash prints a crash as one red block: what happened, where, and the
// head of the kernel's report.
func humanCrash(w io.Writer, e Event) {
	fmt.Fprintf(w, "%s %s: %s\n", red("✗"), red(crashWhat[e.Severity]), e.Title)
	where := e.Module
	if e.Function != "" {
		where += ": " + e.Function
	}
	if e.Source != "" {
		where += " at " + e.Source
	}
	switch {
	case e.InModule != nil && *e.InModule:
		fmt.Fprintf(w, "  %s\n", red("in your module "+where))
	case e.InModule != nil && where != "":
		fmt.Fprintf(w, "  not in %s (points at %s)\n", e.UserModule, where)
	case e.InModule != nil:
		fmt.Fprintf(w, "  not in %s\n", e.UserModule)
	}
	lines := e.Lines
	if len(lines) > crashShown {
		lines = lines[:crashShown]
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", red("│ "+l))
	}
	if len(e.Lines) > len(lines) {
		fmt.Fprintf(w, "  %s\n", dim(fmt.Sprintf("│ … %d more lines (--json has them all)", len(e.Lines)-len(lines))))
	}
}

// kunitCase prints a case that failed or crashed on one line: which, where,
// and the expected/actual text.
func (r *Human) kunitCase(e Event) {
	if e.Status != string(kunit.Fail) && e.Status != string(kunit.Crash) {
		return
	}
	name := e.Suite
	if e.Case != "" {
		name += "." + e.Case
	}
	if e.Param != "" {
		name += "[" + e.Param + "]"
	}
	what := "crashed"
	if e.Status == string(kunit.Fail) {
		what = "failed"
	}
	if e.File != "" {
		file := e.File
		if rel, err := filepath.Rel(r.wd, file); err == nil && filepath.IsAbs(file) && r.wd != "" && !strings.HasPrefix(rel, "..") {
			file = rel
		}
		what += fmt.Sprintf(" at %s:%d", file, e.Line)
	}
	// The expectation's lines on one: "Expected a == b, but a == 1; b == 2".
	msg := ""
	for _, l := range strings.Split(e.Message, "\n") {
		switch {
		case msg == "":
		case strings.HasSuffix(msg, " but"):
			msg += " "
		default:
			msg += "; "
		}
		msg += l
	}
	if msg != "" {
		what += ": " + msg
	}
	fmt.Fprintf(r.w, "%s %s %s\n", red("✗"), name, what)
}

// humanKUnitSummary prints the line a test runner ends with:
// "✓ kunit 12 passed · 1 skipped (41ms)".
func humanKUnitSummary(w io.Writer, e Event) {
	s := e.KUnitSummary
	if s == nil {
		return
	}
	parts := []string{fmt.Sprintf("%d passed", s.Passed)}
	for _, p := range []struct {
		n    int
		what string
	}{{s.Failed, "failed"}, {s.Crashed, "crashed"}, {s.Skipped, "skipped"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	mark := green("✓")
	if s.Failed+s.Crashed > 0 {
		mark = red("✗")
	}
	fmt.Fprintf(w, "%s kunit %s %s\n", mark, strings.Join(parts, " · "), dim("("+ms(s.MS)+")"))
}

// ms formats milliseconds the way the status line shows them: 41ms, 1.24s.
func ms(v int64) string {
	if v < 1000 {
		return fmt.Sprintf("%dms", v)
	}
	return fmt.Sprintf("%.2fs", float64(v)/1000)
}

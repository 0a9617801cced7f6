package loop

import (
	"context"
	"fmt"
	"time"

	"kwatch/builder"
	"kwatch/event"
	"kwatch/guest"
	"kwatch/kmsg"
	"kwatch/kunit"
)

// kunitRuns says whether the guest runs the KUnit suites of the module about
// to load (they run inside its insmod). A guest kernel without KUnit is
// asked about once per boot and named once per run, with the fix.
func (l *loop) kunitRuns(ctx context.Context, s guest.Session, info builder.Modinfo) bool {
	if info.KUnitSuites == 0 {
		return false
	}
	if l.kunitBoot != s.BootID() {
		ok, err := s.KUnit(ctx)
		if err != nil {
			l.error(err)
			return false
		}
		l.kunitBoot, l.kunitOK = s.BootID(), ok
	}
	if !l.kunitOK && !l.toldNoKUnit {
		l.toldNoKUnit = true
		l.notice(fmt.Sprintf("%s has %s, but the guest's kernel %s has no KUnit, so its tests do not run: boot a kernel built with CONFIG_KUNIT=y (kwatch's scripts/rust-kernel.sh builds one)",
			info.Name, suites(info.KUnitSuites), s.Release()))
	}
	return l.kunitOK
}

// testRun follows the reload of a module whose KUnit suites run inside its
// insmod: it collects the kernel log, and an oops cancels the reload, for an
// insmod whose case oopsed does not return (on 6.1 not before KUnit's 300 s
// timeout).
type testRun struct {
	records  func() []kmsg.Record
	stopOops func()
	oops     chan string // the title of an oops during the reload
}

// startTests starts following a reload that cancel cancels.
func (l *loop) startTests(cancel context.CancelFunc) *testRun {
	t := &testRun{records: l.kmsg.collect(), oops: make(chan string, 1)}
	t.stopOops = l.crashes.whenOops(func(title string) {
		select {
		case t.oops <- title:
		default:
		}
		cancel()
	})
	return t
}

// reloaded stops watching for an oops and returns the title of one seen
// during the reload, or "". A nil testRun has seen none.
func (t *testRun) reloaded() string {
	if t == nil {
		return ""
	}
	t.stopOops()
	select {
	case title := <-t.oops:
		return title
	default:
		return ""
	}
}

// results stops collecting and returns the records collected.
func (t *testRun) results() []kmsg.Record {
	t.stopOops()
	return t.records()
}

func suites(n int) string {
	if n == 1 {
		return "a KUnit suite"
	}
	return fmt.Sprintf("%d KUnit suites", n)
}

// kunitResults reports each case of the KUnit output in records and a
// summary, and returns whether the suites failed: a case failed or crashed,
// or no results came. oopsed says the output ended in an oops: the cases
// left are crashed.
func (l *loop) kunitResults(info builder.Modinfo, records []kmsg.Record, oopsed string) (failed bool) {
	p := kunit.NewParser()
	var first, last time.Duration
	seen := false
	for _, r := range records {
		if p.Feed(r.Message) {
			if !seen {
				first, seen = r.Time, true
			}
			last = r.Time
		}
	}
	cases := p.Finish()
	if len(cases) == 0 {
		if oopsed == "" {
			l.notice(fmt.Sprintf("%s has %s but printed no KUnit results: does the guest's kernel command line have kunit.enable=0?",
				info.Name, suites(info.KUnitSuites)))
		}
		return true
	}
	for _, c := range cases {
		if c.Status == kunit.Crash && c.Message == "did not finish" && oopsed != "" {
			c.Message = "the kernel oopsed while it ran: " + oopsed
		}
		l.report.Report(event.Event{Type: event.KindKUnitCase, Time: time.Now(), Module: info.Name, Suite: c.Suite, Case: c.Name,
			Status: string(c.Status), Param: c.Param, File: c.File, Line: c.Line, Message: c.Message})
	}
	n := kunit.Count(cases)
	l.report.Report(event.Event{Type: event.KindKUnitSum, Time: time.Now(), Module: info.Name, KUnitSummary: &event.KUnitSummary{
		Passed: n.Passed, Failed: n.Failed, Skipped: n.Skipped, Crashed: n.Crashed, MS: (last - first).Milliseconds()}})
	return n.Failed+n.Crashed > 0
}

package loop

import (
	"errors"
	"strings"
	"testing"
	"time"

	"kwatch/builder/buildertest"
	"kwatch/event"
	"kwatch/guest"
)

// A 6.1 kernel's KUnit output for a module, as its insmod logs it.
var ktapFailing = []string{
	"    KTAP version 1",
	"    # Subtest: tally",
	"    1..4",
	"    ok 1 tally_add",
	"    ok 2 tally_sub",
	"    # tally_overflow: EXPECTATION FAILED at /src/tally_test.c:25\n    Expected a == 100, but\n        a == 110",
	"    not ok 3 tally_overflow",
	"    ok 4 tally_later # SKIP not yet",
	"# tally: pass:2 fail:1 skip:1 total:4",
	"not ok 1 tally",
}

// kunitKO is a build of module tally with one KUnit suite.
func (r *rig) kunitKO() buildStep {
	return buildStep{ko: buildertest.WriteKUnitKO(r.t, r.t.TempDir(), "tally", fakeRelease+" SMP preempt mod_unload ", 1)}
}

// reloadLogs makes each reload log lines, as a module's suites do inside insmod.
func reloadLogs(lines []string) func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
	return func(b *fakeBoot, name, remote string) (guest.ReloadResult, error) {
		for _, l := range lines {
			b.logf("%s", l)
		}
		b.loaded[name] = remote
		return guest.ReloadResult{}, nil
	}
}

func TestKUnitResults(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		ktap   []string
		kunit  bool
		want   event.KUnitSummary
		failed bool
	}{
		{"a case fails", ktapFailing, true, event.KUnitSummary{Passed: 2, Failed: 1, Skipped: 1}, true},
		{"all pass or skip", []string{
			"    KTAP version 1", "    # Subtest: tally", "    1..2", "    ok 1 tally_add", "    ok 2 tally_later # SKIP not yet", "ok 1 tally",
		}, true, event.KUnitSummary{Passed: 1, Skipped: 1}, false},
		{"no results", []string{"tally: loaded", "kunit: disabled"}, true, event.KUnitSummary{}, true},
		{"no KUnit in the guest", nil, false, event.KUnitSummary{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, true)
			r.builder.steps = []buildStep{r.kunitKO()}
			r.guest.kunit = tt.kunit
			r.guest.reload = reloadLogs(tt.ktap)
			err := r.once()
			if failed := errors.Is(err, ErrFailed); failed != tt.failed || (err != nil && !failed) {
				t.Fatalf("--once = %v, want failed %v:%s", err, tt.failed, r.events)
			}
			r.events.wait(t, event.KindLoaded, 1)
			sums := r.events.of(event.KindKUnitSum)
			switch {
			case !tt.kunit:
				r.events.notice(t, "tally has a KUnit suite, but the guest's kernel 6.1.0-test has no KUnit, so its tests do not run: boot a kernel built with CONFIG_KUNIT=y")
			case tt.want == event.KUnitSummary{}:
				r.events.notice(t, "tally has a KUnit suite but printed no KUnit results")
			case len(sums) != 1:
				t.Fatalf("%d kunit_summary events, want 1:%s", len(sums), r.events)
			case *sums[0].KUnitSummary != tt.want:
				t.Errorf("summary %+v, want %+v", *sums[0].KUnitSummary, tt.want)
			}
			if tt.want == (event.KUnitSummary{}) && len(sums) != 0 {
				t.Errorf("a summary without results: %+v", sums)
			}
		})
	}
}

// Each case is reported: suite, case, status, and for a failure where and why.
func TestKUnitCaseEvents(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.kunitKO()}
	r.guest.kunit = true
	r.guest.reload = reloadLogs(ktapFailing)
	r.once()
	var got []string
	for _, e := range r.events.of(event.KindKUnitCase) {
		got = append(got, strings.Join([]string{e.Suite, e.Case, e.Status, e.File, e.Message}, "|"))
	}
	want := []string{
		"tally|tally_add|pass||",
		"tally|tally_sub|pass||",
		"tally|tally_overflow|fail|/src/tally_test.c|Expected a == 100, but\na == 110",
		"tally|tally_later|skip||not yet",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("kunit_case events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e := r.events.of(event.KindKUnitCase)[2]; e.Line != 25 {
		t.Errorf("failure at line %d, want 25", e.Line)
	}
}

// The notice about a guest without KUnit comes once per run, and the module
// is loaded all the same.
func TestKUnitMissingToldOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.kunitKO()}
	r.start()
	r.events.wait(t, event.KindLoaded, 1)
	r.watch.save(t, "tally.c")
	r.events.wait(t, event.KindLoaded, 2)
	told := 0
	for _, e := range r.events.of(event.KindNotice) {
		if strings.Contains(e.Message, "has no KUnit") {
			told++
		}
	}
	if told != 1 {
		t.Errorf("told %d times that the guest has no KUnit, want once:%s", told, r.events)
	}
}

// A case that oopses keeps 6.1's insmod waiting for KUnit's timeout: the
// loop stops waiting once the oops is reported, the cases left are crashed,
// and the VM restarts before the next load.
func TestKUnitOopsStopsTheWait(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.kunitKO()}
	r.guest.kunit = true
	r.guest.reload = reloadLogs(append(ktapFailing[:4:4], strings.Split(oopsLog, "\n")...))
	r.guest.hang = true
	r.start()
	start := time.Now()
	e := r.events.wait(t, event.KindLoadFailed, 1)
	if !strings.Contains(e.Message, "a KUnit case oopsed while tally loaded") || time.Since(start) > 20*time.Second {
		t.Errorf("load_failed %q after %s, want the oops named long before the load step's 60s and KUnit's 300s", e.Message, time.Since(start))
	}
	sum := r.events.wait(t, event.KindKUnitSum, 1).KUnitSummary
	if *sum != (event.KUnitSummary{Passed: 1, Crashed: 3}) {
		t.Errorf("summary %+v, want 1 passed and 3 crashed", *sum)
	}
	c := r.events.of(event.KindKUnitCase)[1]
	if c.Status != "crash" || !strings.Contains(c.Message, "the kernel oopsed while it ran: BUG: kernel NULL pointer dereference") {
		t.Errorf("the case that ran: %+v", c)
	}
	r.guest.set(func(g *fakeGuest) { g.reload, g.hang = reloadLogs(ktapFailing), false })
	r.watch.save(t, "tally.c")
	r.events.notice(t, "restarting the VM before loading: oops: BUG: kernel NULL pointer dereference")
	r.events.wait(t, event.KindLoaded, 1)
}

// Running tests taints the kernel N (TAINT_TEST), for good: no sign of a
// crash, so no restart.
func TestKUnitTaintNoRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t, true)
	r.builder.steps = []buildStep{r.kunitKO()}
	r.guest.kunit = true
	r.guest.reload = reloadLogs(ktapFailing)
	r.guest.taint = 1<<18 | 1<<12 | 1<<13 // N, O, E
	r.start()
	r.events.wait(t, event.KindKUnitSum, 1)
	r.watch.save(t, "tally.c")
	r.events.wait(t, event.KindKUnitSum, 2)
	if n := r.guest.restartCount(); n != 0 {
		t.Errorf("%d restarts of a guest tainted N, want none:%s", n, r.events)
	}
}

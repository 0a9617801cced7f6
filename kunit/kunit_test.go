package kunit

import (
	"reflect"
	"testing"
)

// parse feeds records and finishes.
func parse(records ...string) []Case {
	p := NewParser()
	for _, r := range records {
		p.Feed(r)
	}
	return p.Finish()
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []string
		want    []Case
	}{{
		// Linux 6.1, a module loaded after boot: the suite header is
		// indented and its result line is not; a failed expectation is one
		// record; the module's own lines come in between.
		name: "6.1 module",
		records: []string{
			"tally: loading out-of-tree module taints kernel.",
			"    KTAP version 1",
			"    # Subtest: tally",
			"    1..4",
			"    ok 1 tally_add",
			"    ok 2 tally_add_negative",
			"    # tally_overflow: EXPECTATION FAILED at /abs/path/tally_test.c:25\n    Expected tally_add(90, 20) == 100, but\n        tally_add(90, 20) == 110\n",
			"e1000: eth0 NIC Link is Up 1000 Mbps Full Duplex",
			"    not ok 3 tally_overflow",
			"    ok 4 tally_later # SKIP not yet",
			"# tally: pass:2 fail:1 skip:1 total:4",
			"# Totals: pass:2 fail:1 skip:1 total:4",
			"not ok 1 tally",
			"tally: version 1 loaded",
		},
		want: []Case{
			{Suite: "tally", Name: "tally_add", Status: Pass},
			{Suite: "tally", Name: "tally_add_negative", Status: Pass},
			{Suite: "tally", Name: "tally_overflow", Status: Fail, File: "/abs/path/tally_test.c", Line: 25,
				Message: "Expected tally_add(90, 20) == 100, but\ntally_add(90, 20) == 110"},
			{Suite: "tally", Name: "tally_later", Status: Skip, Message: "not yet"},
		},
	}, {
		// Newer kernels: a top-level header and plan, attribute lines.
		name: "top-level header",
		records: []string{
			"KTAP version 1",
			"1..2",
			"    KTAP version 1",
			"    # Subtest: first",
			"    # module: tally_test",
			"    1..1",
			"    # first_case.speed: slow",
			"    ok 1 first_case",
			"ok 1 first",
			"    KTAP version 1",
			"    # Subtest: second",
			"    # module: tally_test",
			"    1..2",
			"    # second_a: ASSERTION FAILED at lib/x.c:7\nExpected p is not null, but is",
			"    not ok 1 second_a",
			"    ok 2 second_b # TODO later",
			"not ok 2 second",
		},
		want: []Case{
			{Suite: "first", Name: "first_case", Status: Pass},
			{Suite: "second", Name: "second_a", Status: Fail, File: "lib/x.c", Line: 7, Message: "Expected p is not null, but is"},
			{Suite: "second", Name: "second_b", Status: Skip, Message: "TODO later"},
		},
	}, {
		// 6.1's parameterised case: a level of its own, no plan, the
		// failure printed at the suite's indentation.
		name: "parameterised",
		records: []string{
			"    KTAP version 1",
			"    # Subtest: sums",
			"    1..2",
			"        KTAP version 1",
			"        # Subtest: sums_table",
			"        ok 1 1 + 1",
			"    # sums_table: EXPECTATION FAILED at /m/sums_test.c:30\n    Expected got == want, but\n        got == 5\n        want == 4",
			"        not ok 2 2 + 2",
			"        ok 3 3 + 3",
			"    # sums_table: pass:2 fail:1 skip:0 total:3",
			"    not ok 1 sums_table",
			"    ok 2 sums_plain",
			"# sums: pass:1 fail:1 skip:0 total:2",
			"# Totals: pass:3 fail:1 skip:0 total:4",
			"not ok 1 sums",
		},
		want: []Case{
			{Suite: "sums", Name: "sums_table", Status: Fail, Param: "2 + 2", File: "/m/sums_test.c", Line: 30,
				Message: "Expected got == want, but\ngot == 5\nwant == 4"},
			{Suite: "sums", Name: "sums_plain", Status: Pass},
		},
	}, {
		// The output ends in the third of four cases: the kernel crashed.
		name: "ended early",
		records: []string{
			"    KTAP version 1",
			"    # Subtest: tally",
			"    1..4",
			"    ok 1 tally_add",
			"    ok 2 tally_sub",
			"BUG: kernel NULL pointer dereference, address: 0000000000000000",
		},
		want: []Case{
			{Suite: "tally", Name: "tally_add", Status: Pass},
			{Suite: "tally", Name: "tally_sub", Status: Pass},
			{Suite: "tally", Name: "case 3", Status: Crash, Message: "did not finish"},
			{Suite: "tally", Name: "case 4", Status: Crash, Message: "not run: an earlier case did not finish"},
		},
	}, {
		name: "ended early in a parameterised case",
		records: []string{
			"    KTAP version 1",
			"    # Subtest: sums",
			"    1..2",
			"        KTAP version 1",
			"        # Subtest: sums_table",
			"        ok 1 1 + 1",
		},
		want: []Case{
			{Suite: "sums", Name: "sums_table", Status: Crash, Message: "did not finish"},
			{Suite: "sums", Name: "case 2", Status: Crash, Message: "not run: an earlier case did not finish"},
		},
	}, {
		// Newer kernels report a fault in a case at once.
		name: "try faulted",
		records: []string{
			"KTAP version 1",
			"1..1",
			"    KTAP version 1",
			"    # Subtest: tally",
			"    1..1",
			"    # tally_crash: try faulted: last line seen /m/tally_test.c:40",
			"    not ok 1 tally_crash",
			"not ok 1 tally",
		},
		want: []Case{{Suite: "tally", Name: "tally_crash", Status: Crash, Message: "try faulted: last line seen /m/tally_test.c:40"}},
	}, {
		// 6.1: a suite whose init failed prints no header, only its result.
		name: "suite init failed",
		records: []string{
			"    # tally:     # failed to initialize (-12)",
			"not ok 1 tally",
		},
		want: []Case{{Suite: "tally", Status: Fail, Message: "# failed to initialize (-12)"}},
	}, {
		// Text from dmesg: a failure's lines are lines of their own.
		name: "failure over lines",
		records: []string{
			"    KTAP version 1",
			"    # Subtest: tally",
			"    1..1",
			"    # tally_overflow: EXPECTATION FAILED at t.c:25",
			"        Expected a == b, but",
			"            a == 1",
			"    not ok 1 tally_overflow",
			"not ok 1 tally",
		},
		want: []Case{{Suite: "tally", Name: "tally_overflow", Status: Fail, File: "t.c", Line: 25, Message: "Expected a == b, but\na == 1"}},
	}, {
		name: "TAP 14, XFAIL, no plan",
		records: []string{
			"    TAP version 14",
			"    # Subtest: s",
			"    not ok 1 - known_bug # XFAIL bug 123",
			"    ok 2 - fine",
			"ok 1 - s",
		},
		want: []Case{
			{Suite: "s", Name: "known_bug", Status: Skip, Message: "XFAIL bug 123"},
			{Suite: "s", Name: "fine", Status: Pass},
		},
	}, {
		name:    "no KTAP",
		records: []string{"hello: loaded", "ok then", "# not a test"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parse(tc.records...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%#v\nwant\n%#v", got, tc.want)
			}
		})
	}
}

func TestFeedSaysWhatIsKTAP(t *testing.T) {
	p := NewParser()
	for rec, want := range map[string]bool{
		"    KTAP version 1":                     true,
		"    1..3":                               true,
		"    ok 1 a":                             true,
		"# Totals: pass:1 fail:0 skip:0 total:1": true,
		"e1000: link up":                         false,
		"tally: version 1 here":                  false,
	} {
		if got := p.Feed(rec); got != want {
			t.Errorf("Feed(%q) = %v, want %v", rec, got, want)
		}
	}
}

func TestCount(t *testing.T) {
	got := Count([]Case{{Status: Pass}, {Status: Pass}, {Status: Fail}, {Status: Skip}, {Status: Crash}})
	if want := (Summary{Passed: 2, Failed: 1, Skipped: 1, Crashed: 1}); got != want {
		t.Errorf("Count = %+v, want %+v", got, want)
	}
}

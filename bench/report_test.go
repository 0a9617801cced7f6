package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	ms := time.Millisecond
	v := &variant{steps: []string{"debounce", "build"}}
	// Totals 110..200ms, of which the build is always 100ms.
	for i := 10; i >= 1; i-- {
		v.add(time.Duration(100+10*i)*ms, time.Duration(10*i)*ms, 100*ms)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 150 * ms}, {95, 200 * ms}, {100, 200 * ms}, {1, 110 * ms}} {
		if got := v.percentile(tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := v.overhead(); got != 50*ms {
		t.Errorf("overhead = %v, want 50ms (p50 without the 100ms build)", got)
	}
	if got := (&variant{}).percentile(50); got != 0 {
		t.Errorf("p50 of no samples = %v, want 0", got)
	}
}

func TestLostCount(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		n    int
		isIt bool
	}{
		{"kwatch: 45909 kernel log lines lost (overwritten before they could be read)", 45909, true},
		{"kwatch: kwbench loaded (cycle 3)", 0, false},
		{"kwflood: line 7", 0, false},
		{"driver: 3 kernel log lines lost", 0, false},
	} {
		n, ok := lostCount(tc.msg)
		if n != tc.n || ok != tc.isIt {
			t.Errorf("lostCount(%q) = %d, %v; want %d, %v", tc.msg, n, ok, tc.n, tc.isIt)
		}
	}
}

func TestReadProc(t *testing.T) {
	s0, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin for 100ms: about 10 ticks of the 100 Hz CPU time.
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	s1, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s1.rss <= 0 || s1.hwm < s1.rss {
		t.Errorf("rss %d, peak %d: want 0 < rss <= peak", s1.rss, s1.hwm)
	}
	if s1.cpu < s0.cpu {
		t.Errorf("CPU time went back from %v to %v", s0.cpu, s1.cpu)
	}
	if s1.since(s0, 0).cpu <= 0 {
		t.Errorf("a busy loop used no CPU: %v → %v", s0.cpu, s1.cpu)
	}
	if _, err := readProc(-1); err == nil {
		t.Error("readProc(-1) succeeded")
	}
}

// A module with KUnit suites is held to its compiler floor plus its tests'
// own run time + 150ms, not to the floor + 100ms of a module without.
func TestKUnitTarget(t *testing.T) {
	ms := time.Millisecond
	kw := &variant{steps: []string{"debounce", "build"}, tests: []time.Duration{20 * ms, 30 * ms, 25 * ms}}
	floor := &variant{steps: floorSteps}
	for _, total := range []time.Duration{500 * ms, 520 * ms, 510 * ms} {
		kw.add(total, 5*ms, 300*ms)
		floor.add(300*ms, 300*ms, 0, 0, 0)
	}
	r := &results{modules: []*moduleRow{{name: "units-c (a KUnit suite, Rust 6.1 kernel)", kwatch: kw, floor: floor}}}
	ts := r.targets()
	if len(ts) != 1 || !strings.Contains(ts[0].name, "save → kunit_summary p50 ≤ compiler floor + the tests' own run time + 150ms") ||
		ts[0].measured != "510ms against 300ms + 25ms + 150ms" || ts[0].met {
		t.Errorf("targets %+v, want one for the KUnit row: 510ms against 300ms + 25ms + 150ms, missed", ts)
	}
}

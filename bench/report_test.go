package main

import (
	"os"
	"reflect"
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
	// Spin until the 100 Hz CPU time ticks: a few ms, more on a loaded
	// machine; 5s of spinning that counts nothing is a failure.
	var s1 procStat
	for end := time.Now().Add(5 * time.Second); ; {
		if s1, err = readProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if s1.since(s0, 0).cpu > 0 || time.Now().After(end) {
			break
		}
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

// row returns a reload row on kernel whose every sample takes total, of
// which build is the build and the rest is shared out to the other steps.
func row(kernel, name string, n int, total, build time.Duration) *variant {
	v := &variant{kernel: kernel, name: name, steps: []string{"debounce", "build", "rest"}}
	for range n {
		v.add(total, 5*time.Millisecond, build, total-build-5*time.Millisecond)
	}
	return v
}

// multiKernel is a run on Debian 6.1 (with the seed loop), 6.12 (per-kernel
// parts only) and the Rust kernel.
func multiKernel() *results {
	ms := time.Millisecond
	kb61, kb612 := row("Debian 6.1", "kwatch (Kbuild)", 3, 300*ms, 250*ms), row("Debian 6.12", "kwatch (Kbuild)", 3, 600*ms, 540*ms)
	pf612, rust := row("Debian 6.12", "printerfact-c: kwatch (Kbuild)", 3, 700*ms, 640*ms), row("Rust 6.1", "hello-rust: kwatch (Kbuild)", 3, 150*ms, 120*ms)
	return &results{
		kernels: []string{"Debian 6.1", "Debian 6.12", "Rust 6.1"},
		reload: []*variant{
			row("Debian 6.1", "floor (make + insmod on an open connection)", 3, 1000*ms, 920*ms),
			row("Debian 6.1", "seed loop (make, scp, ssh ×3)", 3, 1600*ms, 900*ms),
			kb61,
			row("Debian 6.12", "floor (make + insmod on an open connection)", 3, 1200*ms, 1100*ms),
			kb612, pf612, rust,
		},
		modules: []*moduleRow{
			{kernel: "Debian 6.1", name: "the bench's C module", kwatch: kb61, floor: row("Debian 6.1", "compiler floor", 3, 240*ms, 0)},
			{kernel: "Debian 6.12", name: "the bench's C module", kwatch: kb612, floor: row("Debian 6.12", "compiler floor", 3, 480*ms, 0)},
			{kernel: "Debian 6.12", name: "printerfact-c (MODULE_VERSION)", kwatch: pf612, floor: row("Debian 6.12", "compiler floor", 3, 580*ms, 0)},
			{kernel: "Rust 6.1", name: "hello-rust", kwatch: rust, floor: row("Rust 6.1", "compiler floor", 3, 100*ms, 0)},
		},
		sessionRTT: []kernelTime{{"Debian 6.1", 24 * ms}, {"Debian 6.12", 30 * ms}},
	}
}

func TestKernelTargets(t *testing.T) {
	r := multiKernel()
	for _, tc := range []struct {
		kernel string
		want   []target
	}{
		{"Debian 6.1", []target{
			{"Debian 6.1: kwatch (Kbuild) over the floor ≤ 100ms p50 (build excluded)", "-30ms", true},
			{"Debian 6.1: ≥ 5× less overhead than the seed loop", "none over the floor (seed 620ms over it)", true},
			{"Debian 6.1, the bench's C module: kwatch (Kbuild) p50 ≤ 0.55 × the make floor's p50", "0.30× (300ms against 1.00s)", true},
			{"Debian 6.1: save → build start ≤ 25ms (p50, kwatch (Kbuild))", "5ms", true},
			{"Debian 6.1, the bench's C module: kwatch p50 ≤ compiler floor + 100ms", "300ms against 240ms + 100ms", true},
		}},
		// No seed loop on 6.12; its C module misses the 0.55× target.
		{"Debian 6.12", []target{
			{"Debian 6.12: kwatch (Kbuild) over the floor ≤ 100ms p50 (build excluded)", "-40ms", true},
			{"Debian 6.12, the bench's C module: kwatch (Kbuild) p50 ≤ 0.55 × the make floor's p50", "0.50× (600ms against 1.20s)", true},
			{"Debian 6.12: save → build start ≤ 25ms (p50, kwatch (Kbuild))", "5ms", true},
			{"Debian 6.12, the bench's C module: kwatch p50 ≤ compiler floor + 100ms", "600ms against 480ms + 100ms", false},
			{"Debian 6.12, printerfact-c (MODULE_VERSION): kwatch p50 ≤ compiler floor + 100ms", "700ms against 580ms + 100ms", false},
		}},
		{"Rust 6.1", []target{
			{"Rust 6.1, hello-rust: kwatch p50 ≤ compiler floor + 100ms", "150ms against 100ms + 100ms", true},
			{"Rust 6.1, hello-rust: save → init line p50 ≤ 0.40s", "150ms", true},
		}},
	} {
		t.Run(tc.kernel, func(t *testing.T) {
			if got := r.kernelTargets(tc.kernel); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("targets:\n%v\nwant:\n%v", got, tc.want)
			}
		})
	}
}

// Every row and target of the report says which kernel it was measured on.
func TestWriteLabelsKernels(t *testing.T) {
	var md strings.Builder
	multiKernel().write(&md, config{edits: 3})
	for _, want := range []string{
		"| Debian 6.1 | floor (make + insmod on an open connection) | 3 | 1.00s |",
		"| Debian 6.12 | floor (make + insmod on an open connection) | 3 | 1.20s |",
		"| Debian 6.12 | kwatch (Kbuild) | 3 | 600ms | 600ms | 60ms | -40ms |",
		"| Debian 6.12 | printerfact-c (MODULE_VERSION) | 700ms | 5ms | 580ms |",
		"| Rust 6.1 | hello-rust | 150ms |",
		"takes 24ms on Debian 6.1, 30ms on Debian 6.12 (median of 10)",
		"| Debian 6.12, the bench's C module: kwatch p50 ≤ compiler floor + 100ms | 600ms against 480ms + 100ms | **missed** |",
		"| Debian 6.12, the bench's C module: kwatch (Kbuild) p50 ≤ 0.55 × the make floor's p50 | 0.50× (600ms against 1.20s) | met |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("no %q in the report:\n%s", want, md.String())
		}
	}
}

// The report's first line says how the run was asked for.
func TestConfigArgs(t *testing.T) {
	for _, tc := range []struct {
		c    config
		want string
	}{
		{config{edits: 20, lines: 50000, saves: 500}, "-edits 20 -lines 50000 -saves 500"},
		{config{edits: 3, lines: 1, saves: 2, kernel: "/boot/vmlinuz-x", only: map[string]bool{"kbuild": true, "floor": true}},
			"-edits 3 -lines 1 -saves 2 -kernel /boot/vmlinuz-x -only floor,kbuild"},
	} {
		if got := tc.c.args(); got != tc.want {
			t.Errorf("args() = %q, want %q", got, tc.want)
		}
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
		floor.add(300*ms, 300*ms, 0, 0, 0, 0)
	}
	r := &results{kernels: []string{"Rust 6.1"}, modules: []*moduleRow{{kernel: "Rust 6.1", name: "units-c (a KUnit suite)", kwatch: kw, floor: floor}}}
	ts := r.targets()
	if len(ts) != 1 || !strings.Contains(ts[0].name, "save → kunit_summary p50 ≤ compiler floor + the tests' own run time + 150ms") ||
		ts[0].measured != "510ms against 300ms + 25ms + 150ms" || ts[0].met {
		t.Errorf("targets %+v, want one for the KUnit row: 510ms against 300ms + 25ms + 150ms, missed", ts)
	}
}

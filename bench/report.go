package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// variant is one way of getting an edit into the guest, with its samples.
type variant struct {
	kernel  string // the guest's (guestKernel.label)
	name    string
	steps   []string // what each sample's step durations are
	samples []sample
	err     error      // set when the variant stopped early
	cost    procSample // kwatch's own, over the edits (kwatch variants)
	// A module with KUnit suites: their own run time in each sample (part
	// of its reload, for they run inside insmod).
	tests []time.Duration
}

type sample struct {
	total time.Duration // save → the new init line seen
	steps []time.Duration
}

func (v *variant) add(total time.Duration, steps ...time.Duration) {
	v.samples = append(v.samples, sample{total: total, steps: steps})
}

// percentile is the nearest-rank p-th percentile of the totals.
func (v *variant) percentile(p float64) time.Duration {
	return percentile(v.samples, p, func(s sample) time.Duration { return s.total })
}

// stepPercentile is the p-th percentile of one step.
func (v *variant) stepPercentile(step string, p float64) time.Duration {
	i := slices.Index(v.steps, step)
	if i < 0 {
		return 0
	}
	return percentile(v.samples, p, func(s sample) time.Duration { return s.steps[i] })
}

// overhead is the p50 of everything but the build. Every variant runs the
// same make, whose time varies with the machine's load, so this is what
// tells the variants apart.
func (v *variant) overhead() time.Duration {
	b := slices.Index(v.steps, "build")
	return percentile(v.samples, 50, func(s sample) time.Duration { return s.total - s.steps[b] })
}

func percentile(samples []sample, p float64, of func(sample) time.Duration) time.Duration {
	t := make([]time.Duration, len(samples))
	for i, s := range samples {
		t[i] = of(s)
	}
	return nearestRank(t, p)
}

// nearestRank is the nearest-rank p-th percentile of t.
func nearestRank(t []time.Duration, p float64) time.Duration {
	if len(t) == 0 {
		return 0
	}
	t = slices.Sorted(slices.Values(t))
	return t[max(int(math.Ceil(p/100*float64(len(t))))-1, 0)]
}

// shares describes the mean of each step and its share of the mean total.
func (v *variant) shares() string {
	if len(v.samples) == 0 {
		return ""
	}
	var total time.Duration
	sums := make([]time.Duration, len(v.steps))
	for _, s := range v.samples {
		total += s.total
		for i, d := range s.steps {
			sums[i] += d
		}
	}
	var parts []string
	for i, name := range v.steps {
		parts = append(parts, fmt.Sprintf("%s %s (%.0f%%)", name, dur(sums[i]/time.Duration(len(v.samples))),
			100*float64(sums[i])/float64(total)))
	}
	return strings.Join(parts, " · ")
}

type results struct {
	started, finished time.Time
	env               [][2]string
	watch             watchResult
	reload            []*variant
	modules           []*moduleRow
	floods            []floodResult
	soak              *soakResult
	cost              struct{ idle procSample }
	stray             []string
	kernels           []string     // the guests' labels, in the order they ran
	sessionRTT        []kernelTime // one command on an open SSH connection
}

// kernelTime is a time measured on one kernel's guest.
type kernelTime struct {
	kernel string
	d      time.Duration
}

// find returns the reload row with samples whose name starts with prefix,
// measured on kernel's guest.
func (r *results) find(kernel, prefix string) *variant {
	for _, v := range r.reload {
		if v.kernel == kernel && strings.HasPrefix(v.name, prefix) && len(v.samples) > 0 {
			return v
		}
	}
	return nil
}

func (r *results) write(w io.Writer, c config) {
	fmt.Fprintf(w, "# kwatch benchmark results\n\n`make bench` (`go run ./bench %s`), one run, %s.\n\n",
		c.args(), r.finished.Sub(r.started).Round(time.Second))
	if len(c.flags) > 0 {
		fmt.Fprintf(w, "kwatch ran with the extra flags `%s`.\n\n", strings.Join(c.flags, " "))
	}
	fmt.Fprintln(w, "| | |\n|---|---|")
	for _, kv := range r.env {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], kv[1])
	}

	if len(r.reload) > 0 {
		fmt.Fprintf(w, "\n## Reload latency: save → the new module's init line seen (%d edits each)\n\n", c.edits)
		fmt.Fprintln(w, "| kernel | variant | n | p50 | p95 | p50 without the build | that over the floor's | where the time goes (mean, share) |\n|---|---|---|---|---|---|---|---|")
		for _, v := range r.reload {
			over := "—"
			if floor := r.find(v.kernel, "floor"); floor != nil && v != floor && len(v.samples) > 0 {
				over = dur(v.overhead() - floor.overhead())
			}
			name := v.name
			if v.err != nil {
				name += " (stopped early: " + firstLine(v.err.Error()) + ")"
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s |\n", v.kernel, name, len(v.samples),
				dur(v.percentile(50)), dur(v.percentile(95)), dur(v.overhead()), over, v.shares())
		}
		if len(r.sessionRTT) > 0 {
			var on []string
			for _, t := range r.sessionRTT {
				on = append(on, dur(t.d)+" on "+t.kernel)
			}
			fmt.Fprintf(w, "\nOne command on an open SSH connection (`true`) takes %s (median of %d).\n", strings.Join(on, ", "), rttRuns)
		}
		fmt.Fprintln(w, "\nkwatch's steps come from its --json events: debounce is save → build_start, build/upload/reload are "+
			"the loaded event's build_ms/upload_ms/reload_ms, and \"log line + rest\" is what remains up to the init line's kmsg event "+
			"(negative when the line arrives before the reload command has returned).")
	}

	if len(r.modules) > 0 {
		r.writeModules(w, c)
	}

	if len(r.floods) > 0 {
		fmt.Fprintf(w, "\n## Kernel log throughput: a module printing %d lines in its init\n\n", c.lines)
		fmt.Fprintln(w, "| flood | delivered | lines/s | lost (never shown) | lost, reported by kwatch | lost silently | gaps |\n|---|---|---|---|---|---|---|")
		for _, f := range r.floods {
			rate := "—"
			if f.took > 0 {
				rate = fmt.Sprintf("%.0f", float64(f.delivered)/f.took.Seconds())
			}
			name := f.name
			if f.err != nil {
				name += " (stopped early: " + firstLine(f.err.Error()) + ")"
			}
			fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %d | %d |\n", name, f.delivered, rate, f.missing, f.reported, f.silent(), f.gaps)
		}
		fmt.Fprintln(w, "\nlines/s is delivered lines over the time from the first to the last one in kwatch's event stream. "+
			"Lost lines are found by their numbers; kwatch reports a loss as a \"kwatch: N kernel log lines lost\" kmsg event.")
	}

	if r.soak != nil {
		r.writeSoak(w)
	}

	if wr := r.watch; wr.files > 0 {
		fmt.Fprintf(w, "\n## Watching\n\n| measure | result |\n|---|---|\n")
		fmt.Fprintf(w, "| watch setup, %d files in %d dirs (median of %d) | %s |\n", wr.files, wr.dirs, setupRuns, dur(wr.setup))
		fmt.Fprintf(w, "| checkout writing %d files → batches | %d (first with %d files, %s after the last write) |\n",
			wr.checkout, wr.batches, wr.batchFiles, dur(wr.latency))
	}

	idle := r.cost.idle
	if idle.wall > 0 || len(r.floods) > 0 {
		fmt.Fprintf(w, "\n## kwatch's own cost (/proc/<pid>/stat, status; children such as make not counted)\n\n| when | CPU (one core) | RSS | peak RSS |\n|---|---|---|---|\n")
		for _, v := range r.reload {
			if v.cost.wall > 0 {
				fmt.Fprintf(w, "| %d edits, %s, %s (%s CPU per edit) | %.1f%% | %s | %s |\n", len(v.samples), v.kernel, v.name,
					dur(time.Duration(v.cost.cpu*float64(v.cost.wall)/float64(len(v.samples)))), 100*v.cost.cpu, mb(v.cost.rss), mb(v.cost.hwm))
			}
		}
		if idle.wall > 0 {
			fmt.Fprintf(w, "| idle, %s after the edits | %.2f%% | %s | %s |\n", dur(idle.wall), 100*idle.cpu, mb(idle.rss), mb(idle.hwm))
		}
		for _, f := range r.floods {
			if f.cpu.wall > 0 {
				fmt.Fprintf(w, "| %s flood, %s | %.1f%% | %s | %s |\n", f.name, dur(f.cpu.wall), 100*f.cpu.cpu, mb(f.cpu.rss), mb(f.cpu.hwm))
			}
		}
	}

	fmt.Fprintf(w, "\n## Targets\n\n| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		mark := "met"
		if !t.met {
			mark = "**missed**"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.name, t.measured, mark)
	}
	if len(r.stray) > 0 {
		fmt.Fprintf(w, "\nProcesses left behind: %s\n", strings.Join(r.stray, "; "))
	} else {
		fmt.Fprintln(w, "\nNo process was left behind.")
	}
}

// writeModules compares kwatch on each module with the module's compiler floor.
func (r *results) writeModules(w io.Writer, c config) {
	fmt.Fprintf(w, "\n## Per module: kwatch against the compiler floor (%d edits each)\n\n", c.edits)
	fmt.Fprintln(w, "| kernel | module | kwatch p50 | save → build start p50 | compiler floor p50 | floor steps (mean, share) | kwatch over the floor (p50) | .ko → uploaded |\n|---|---|---|---|---|---|---|---|")
	for _, m := range r.modules {
		name, kw, start, fl, steps, over, size := m.name, "—", "—", "—", "—", "—", "—"
		if m.err != nil {
			name += " (stopped early: " + firstLine(m.err.Error()) + ")"
		}
		if m.kwatch != nil && len(m.kwatch.samples) > 0 {
			kw, start = dur(m.kwatch.percentile(50)), dur(m.kwatch.stepPercentile("debounce", 50))
		}
		if m.floor != nil && len(m.floor.samples) > 0 {
			fl, steps = dur(m.floor.percentile(50)), m.floor.shares()
			if kw != "—" {
				over = dur(m.kwatch.percentile(50) - m.floor.percentile(50))
			}
		}
		if m.full > 0 {
			size = fmt.Sprintf("%s → %s", kbytes(m.full), kbytes(m.stripped))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.kernel, name, kw, start, fl, steps, over, size)
	}
	fmt.Fprintln(w, "\nThe compiler floor is the commands `make V=1` prints for a rebuild after an edit (compiler with objtool, "+
		"modpost, the .mod.o when MODULE_VERSION changes it, the final link with Linux 6.10+'s .module-common.o, and, where the "+
		"kernel has BTF (Debian's 6.12), the module's BTF: pahole and resolve_btfids), replayed one after another from the kernel build dir "+
		"in the environment make exports; Kbuild's bookkeeping and checks are left out. One replay follows each of kwatch's edits "+
		"(after its load), so that both are measured on the same machine at the same time. kwatch uploads the module stripped of "+
		"debug info (objcopy --strip-debug) and keeps the full one on the host.")
}

type target struct {
	name, measured string
	met            bool
}

// targets checks the results against the goals; a target whose parts were
// not measured is left out. Each kernel's targets are named after it.
func (r *results) targets() []target {
	var ts []target
	for _, k := range r.kernels {
		ts = append(ts, r.kernelTargets(k)...)
	}
	for _, f := range r.floods {
		if f.err == nil {
			ts = append(ts, target{"0 kernel log lines lost silently, " + f.name, fmt.Sprintf("%d of %d", f.silent(), f.lines), f.silent() == 0})
		}
	}
	if r.watch.files > 0 {
		ts = append(ts, target{fmt.Sprintf("watch setup of %d files < 1s", r.watch.files), dur(r.watch.setup), r.watch.setup < time.Second})
		ts = append(ts, target{fmt.Sprintf("a %d-file checkout is one batch", r.watch.checkout), fmt.Sprint(r.watch.batches), r.watch.batches == 1})
	}
	if idle := r.cost.idle; idle.wall > 0 {
		ts = append(ts, target{"idle CPU ≈ 0 (< 1% of a core)", fmt.Sprintf("%.2f%%", 100*idle.cpu), idle.cpu < 0.01})
	}
	peak := r.cost.idle.hwm
	for _, f := range r.floods {
		peak = max(peak, f.cpu.hwm)
	}
	if s := r.soak; s != nil && s.err == nil && len(s.samples) > 1 {
		peak = max(peak, s.samples[len(s.samples)-1].kwatch.hwm)
		rss := s.growth(func(x soakSample) int64 { return x.kwatch.rss })
		fds := s.growth(func(x soakSample) int64 { return int64(x.fds) })
		gs := s.growth(func(x soakSample) int64 { return int64(x.goroutines) })
		n := s.samples[len(s.samples)-1].saves
		ts = append(ts,
			target{fmt.Sprintf("soak: every one of %d saves loaded through the fast path", n), fmt.Sprint(s.fast), s.fast == n},
			target{fmt.Sprintf("soak: kwatch's RSS grows ≤ 5 MB over %d saves", n), fmt.Sprintf("%+.1f MB", float64(rss)/(1<<20)), rss <= 5<<20},
			target{fmt.Sprintf("soak: no open fd growth over %d saves", n), fmt.Sprintf("%+d", fds), fds <= 0},
			target{fmt.Sprintf("soak: no goroutine growth over %d saves", n), fmt.Sprintf("%+d", gs), gs <= 0},
			target{"soak: no process of the run left behind", fmt.Sprint(len(s.stray)), len(s.stray) == 0})
	}
	if peak > 0 {
		ts = append(ts, target{"RSS < 40 MB (peak)", mb(peak), peak < 40<<20})
	}
	return ts
}

// kernelTargets are the targets measured on one kernel's guest.
func (r *results) kernelTargets(kernel string) []target {
	var ts []target
	floor, kb, seed, inc := r.find(kernel, "floor"), r.find(kernel, "kwatch (Kbuild)"), r.find(kernel, "seed"), r.find(kernel, "kwatch (nix incremental)")
	if floor != nil && kb != nil {
		over := kb.overhead() - floor.overhead()
		ts = append(ts, target{kernel + ": kwatch (Kbuild) over the floor ≤ 100ms p50 (build excluded)", dur(over), over <= 100*time.Millisecond})
		if seed != nil {
			seedOver := seed.overhead() - floor.overhead()
			// kwatch may take less than the floor's own upload and reload:
			// then there is no overhead to divide by.
			measured, met := fmt.Sprintf("none over the floor (seed %s over it)", dur(seedOver)), true
			if over > 0 {
				ratio := float64(seedOver) / float64(over)
				measured, met = fmt.Sprintf("%.1f× (seed %s over the floor)", ratio, dur(seedOver)), ratio >= 5
			}
			ts = append(ts, target{kernel + ": ≥ 5× less overhead than the seed loop", measured, met})
		}
	}
	if floor != nil && kb != nil {
		ratio := float64(kb.percentile(50)) / float64(floor.percentile(50))
		ts = append(ts, target{kernel + ", the bench's C module: kwatch (Kbuild) p50 ≤ 0.55 × the make floor's p50",
			fmt.Sprintf("%.2f× (%s against %s)", ratio, dur(kb.percentile(50)), dur(floor.percentile(50))), ratio <= 0.55})
	}
	if kb != nil {
		start := kb.stepPercentile("debounce", 50)
		ts = append(ts, target{kernel + ": save → build start ≤ 25ms (p50, kwatch (Kbuild))", dur(start), start <= 25*time.Millisecond})
	}
	for _, m := range r.modules {
		if m.kernel != kernel || m.kwatch == nil || len(m.kwatch.samples) == 0 {
			continue
		}
		switch {
		case m.floor == nil || len(m.floor.samples) == 0:
		case len(m.kwatch.tests) > 0:
			kw, fl, tests := m.kwatch.percentile(50), m.floor.percentile(50), nearestRank(m.kwatch.tests, 50)
			ts = append(ts, target{kernel + ", " + m.name + ": save → kunit_summary p50 ≤ compiler floor + the tests' own run time + 150ms",
				fmt.Sprintf("%s against %s + %s + 150ms", dur(kw), dur(fl), dur(tests)), kw <= fl+tests+150*time.Millisecond})
		default:
			kw, fl := m.kwatch.percentile(50), m.floor.percentile(50)
			ts = append(ts, target{kernel + ", " + m.name + ": kwatch p50 ≤ compiler floor + 100ms",
				fmt.Sprintf("%s against %s + 100ms", dur(kw), dur(fl)), kw <= fl+100*time.Millisecond})
		}
		if strings.HasPrefix(m.name, "hello-rust") {
			kw := m.kwatch.percentile(50)
			ts = append(ts, target{kernel + ", hello-rust: save → init line p50 ≤ 0.40s", dur(kw), kw <= 400*time.Millisecond})
		}
	}
	if kb != nil && inc != nil {
		ratio := float64(inc.percentile(50)) / float64(kb.percentile(50))
		ts = append(ts, target{kernel + ": nix incremental within 10% of Kbuild (p50)", fmt.Sprintf("%+.0f%%", 100*(ratio-1)), ratio <= 1.10})
	}
	return ts
}

func dur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + dur(-d)
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func kbytes(b int64) string { return fmt.Sprintf("%.1f KB", float64(b)/1000) }

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// floodC is a module whose init prints N numbered lines: as fast as printk
// goes, or with pace=K, sleeping 1ms after every K lines so a reader can keep up.
const floodC = `#include <linux/module.h>
#include <linux/init.h>
#include <linux/delay.h>
static int pace;
module_param(pace, int, 0444);
static int __init m_init(void)
{
	int i;
	for (i = 0; i < %[1]d; i++) {
		pr_info("kwflood: line %%d\n", i);
		if (pace > 0 && i %% pace == pace - 1)
			msleep(1);
	}
	return 0;
}
static void __exit m_exit(void) { }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
`

const floodPrefix = "kwflood: line "

type floodResult struct {
	name      string
	lines     int           // printed by the module
	delivered int           // distinct lines kwatch reported
	missing   int           // lines never reported
	gaps      int           // runs of missing lines
	reported  int           // lines kwatch said were lost ("kwatch: N kernel log lines lost")
	took      time.Duration // first to last flood line
	cpu       procSample    // kwatch from the first flood line to the last
	err       error
}

// silent is how many lost lines kwatch did not report.
func (f floodResult) silent() int { return max(f.missing-f.reported, 0) }

// floods runs the flood as a burst and paced.
func (b *bench) floods(ctx context.Context) ([]floodResult, error) {
	dir := filepath.Join(b.guest.dir, "flood")
	if err := writeFile(filepath.Join(dir, "Kbuild"), "obj-m := kwflood.o\n"); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "kwflood.c"), fmt.Sprintf(floodC, b.cfg.lines)); err != nil {
		return nil, err
	}
	var rs []floodResult
	for _, pace := range []int{0, 100} {
		r, err := b.flood(ctx, dir, pace)
		if err != nil {
			r.err = err
		}
		rs = append(rs, r)
		if ctx.Err() != nil {
			return rs, ctx.Err()
		}
	}
	return rs, nil
}

// flood has kwatch load the flood module and counts what arrives in the
// event stream, and what kwatch costs meanwhile.
func (b *bench) flood(ctx context.Context, dir string, pace int) (floodResult, error) {
	r := floodResult{name: "burst (one printk loop)", lines: b.cfg.lines}
	if pace > 0 {
		r.name = fmt.Sprintf("paced (1ms sleep per %d lines)", pace)
	}
	k, err := b.startKwatch(fmt.Sprintf("flood-%d", pace), nil, b.vmArgs(), "--params", fmt.Sprintf("pace=%d", pace), dir)
	if err != nil {
		return r, err
	}
	defer k.stop()
	pid := k.cmd.Process.Pid

	seen := make([]bool, b.cfg.lines)
	var first, last time.Time
	var start procStat
	count := func(e *event) {
		if e.Event != "kmsg" {
			return
		}
		if n, ok := lostCount(e.Message); ok {
			r.reported += n
			return
		}
		i, err := strconv.Atoi(strings.TrimPrefix(e.Message, floodPrefix))
		if !strings.HasPrefix(e.Message, floodPrefix) || err != nil || i < 0 || i >= len(seen) {
			return
		}
		if first.IsZero() {
			first = e.Time
			start, _ = readProc(pid)
		}
		last = e.Time
		if !seen[i] {
			seen[i] = true
			r.delivered++
		}
	}
	if err := k.waitLoaded(ctx, 10*time.Minute, count); err != nil {
		return r, err
	}
	// The stream may still be behind the load: read until it has been quiet a while.
	for r.delivered < r.lines {
		e, err := k.next(ctx, 5*time.Second)
		if err != nil {
			break
		}
		count(e)
	}
	end, err := readProc(pid)
	if err != nil {
		return r, err
	}
	r.missing = r.lines - r.delivered
	for i := range seen {
		if !seen[i] && (i == 0 || seen[i-1]) {
			r.gaps++
		}
	}
	r.took = last.Sub(first)
	r.cpu = end.since(start, r.took)
	return r, nil
}

// lostCount reads kwatch's "kwatch: N kernel log lines lost" notice.
func lostCount(msg string) (int, bool) {
	rest, ok := strings.CutPrefix(msg, "kwatch: ")
	if !ok || !strings.Contains(rest, "kernel log lines lost") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.Fields(rest)[0])
	return n, err == nil
}

// procStat is what /proc says about a process at one moment.
type procStat struct {
	at       time.Time
	cpu      time.Duration // user + system time of the process itself (not its children)
	rss, hwm int64         // resident and peak resident memory, bytes
}

// procSample is a process's cost over a stretch of time.
type procSample struct {
	wall     time.Duration
	cpu      float64 // share of one core
	rss, hwm int64
}

// userHZ is the unit of the times in /proc/<pid>/stat on every Linux ABI.
const userHZ = 100

func readProc(pid int) (procStat, error) {
	st := procStat{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("reading kwatch's CPU time: %w", err)
	}
	// The fields after the command name (which may hold spaces), from field 3 on.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st.cpu = time.Duration(utime+stime) * time.Second / userHZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("reading kwatch's memory use: %w", err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			st.rss = kb << 10
		case "VmHWM":
			st.hwm = kb << 10
		}
	}
	return st, nil
}

// since is the cost from s0 to s over wall (the measured stretch; the
// time between the two reads when 0).
func (s procStat) since(s0 procStat, wall time.Duration) procSample {
	if wall <= 0 {
		wall = s.at.Sub(s0.at)
	}
	return procSample{wall: wall, cpu: (s.cpu - s0.cpu).Seconds() / wall.Seconds(), rss: s.rss, hwm: s.hwm}
}

// measureIdle samples an idle kwatch over d.
func measureIdle(ctx context.Context, pid int, d time.Duration) (procSample, error) {
	s0, err := readProc(pid)
	if err != nil {
		return procSample{}, err
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return procSample{}, ctx.Err()
	}
	s1, err := readProc(pid)
	if err != nil {
		return procSample{}, err
	}
	return s1.since(s0, 0), nil
}

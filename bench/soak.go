package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kwatch/guest/ssh"
)

// soakEvery is how often the soak run samples kwatch and the guest.
const soakEvery = 50

// soakSample is kwatch and the guest after some saves of the soak run.
type soakSample struct {
	saves      int
	kwatch     procStat
	fds        int   // kwatch's open file descriptors
	goroutines int   // kwatch's, from its last loaded event
	guestAvail int64 // the guest's MemAvailable, bytes
	guestProcs int   // processes in the guest
}

type soakResult struct {
	saves   int // asked for
	fast    int // loads built through the fast path
	v       *variant
	samples []soakSample
	stray   []string // processes of the run left behind once kwatch ended
	err     error
}

// growth is how much a measure grew from the first sample to the last.
func (s soakResult) growth(of func(soakSample) int64) int64 {
	if len(s.samples) < 2 {
		return 0
	}
	return of(s.samples[len(s.samples)-1]) - of(s.samples[0])
}

// soak has one kwatch load s.saves saves in a row through its fast path on
// the shared guest, sampling its RSS, open fds and goroutines and the
// guest's free memory and processes every soakEvery saves: a leak shows as
// growth. Then it stops kwatch and looks for processes it left behind.
func (b *bench) soak(ctx context.Context) (r soakResult) {
	r = soakResult{saves: b.cfg.saves, v: &variant{name: "soak"}}
	p, err := newProject(filepath.Join(b.guest.dir, "soak"), "kwsoak", b.guest.kdir, b.guest.release)
	if err != nil {
		r.err = err
		return r
	}
	c, err := b.dialGuest(ctx)
	if err != nil {
		r.err = err
		return r
	}
	defer c.Close()
	k, err := b.startKwatch("soak", []string{"KWATCH_DEBUG_STATS=1"}, b.vmArgs(), p.src)
	if err != nil {
		r.err = err
		return r
	}
	goroutines := 0
	loaded := func(e *event) {
		if e.Event == "loaded" {
			goroutines = e.Goroutines
		}
	}
	sample := func(saves int) error {
		s := soakSample{saves: saves, goroutines: goroutines}
		var err error
		if s.kwatch, err = readProc(k.cmd.Process.Pid); err != nil {
			return err
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", k.cmd.Process.Pid))
		if err != nil {
			return err
		}
		s.fds = len(fds)
		if s.guestAvail, s.guestProcs, err = guestStats(ctx, c); err != nil {
			return err
		}
		r.samples = append(r.samples, s)
		return nil
	}
	r.err = func() error {
		defer k.stop()
		if err := k.waitLoaded(ctx, 10*time.Minute, loaded); err != nil {
			return fmt.Errorf("first load: %w", err)
		}
		if err := sample(0); err != nil {
			return err
		}
		for i := 1; i <= r.saves; i++ {
			want, saved, err := p.edit()
			if err != nil {
				return err
			}
			var line bool
			var done *event
			err = k.waitLoaded(ctx, 5*time.Minute, func(e *event) {
				loaded(e)
				switch {
				case e.Event == "kmsg" && strings.HasSuffix(e.Message, want):
					line = true
				case e.Event == "loaded":
					done = e
				}
			})
			if err != nil {
				return fmt.Errorf("save %d: %w", i, err)
			}
			if !line {
				return fmt.Errorf("save %d: a new version loaded but its init line %q never came", i, want)
			}
			r.v.add(done.Time.Sub(saved))
			if done.Path == "fast" {
				r.fast++
			}
			// As between the edits of the latency runs: let the cycle settle.
			time.Sleep(300 * time.Millisecond)
			if i%soakEvery == 0 || i == r.saves {
				if err := sample(i); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	r.stray = strayProcesses(p.root)
	return r
}

// guestStats reads the guest's MemAvailable and counts its processes.
func guestStats(ctx context.Context, c *ssh.Client) (avail int64, procs int, err error) {
	out, _, _, err := c.Run(ctx, "grep MemAvailable /proc/meminfo; ls -d /proc/[0-9]* | wc -l")
	if err != nil {
		return 0, 0, fmt.Errorf("reading the guest's memory: %w", err)
	}
	f := strings.Fields(string(out)) // MemAvailable: N kB, then the count
	if len(f) != 4 {
		return 0, 0, fmt.Errorf("reading the guest's memory: unexpected %q", out)
	}
	kb, err1 := strconv.ParseInt(f[1], 10, 64)
	procs, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("reading the guest's memory: unexpected %q", out)
	}
	return kb << 10, procs, nil
}

// writeSoak writes the soak run's samples.
func (r *results) writeSoak(w io.Writer) {
	s := r.soak
	fmt.Fprintf(w, "\n## Soak: %d saves in a row through the fast path, one kwatch, one guest\n\n", s.saves)
	if s.err != nil {
		fmt.Fprintf(w, "Stopped early: %s\n\n", firstLine(s.err.Error()))
	}
	fmt.Fprintln(w, "| saves | kwatch RSS | peak RSS | open fds | goroutines | guest MemAvailable | guest processes |\n|---|---|---|---|---|---|---|")
	for _, x := range s.samples {
		fmt.Fprintf(w, "| %d | %s | %s | %d | %d | %s | %d |\n", x.saves, mb(x.kwatch.rss), mb(x.kwatch.hwm), x.fds, x.goroutines, mb(x.guestAvail), x.guestProcs)
	}
	if n := len(s.v.samples); n > 0 {
		fmt.Fprintf(w, "\n%d saves loaded, %d through the fast path; save → loaded p50 %s, p95 %s. ", n, s.fast,
			dur(s.v.percentile(50)), dur(s.v.percentile(95)))
	}
	fmt.Fprintf(w, "Sampled after the first load and every %d saves, 300ms after the load: RSS and fds from /proc/<pid>, "+
		"goroutines from the loaded event (KWATCH_DEBUG_STATS=1), the guest's memory and processes over an SSH connection of the bench's own.\n", soakEvery)
	if len(s.stray) > 0 {
		fmt.Fprintf(w, "\nLeft behind once kwatch ended: %s\n", strings.Join(s.stray, "; "))
	}
}

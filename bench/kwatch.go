package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"kwatch/proc"
)

// event is the part of kwatch's --json events the bench reads.
type event struct {
	Event    string    `json:"event"`
	Time     time.Time `json:"time"`
	Message  string    `json:"message"`
	Seq      uint64    `json:"seq"`
	Path     string    `json:"path"`
	BuildMS  int64     `json:"build_ms"`
	UploadMS int64     `json:"upload_ms"`
	ReloadMS int64     `json:"reload_ms"`
	TotalMS  int64     `json:"total_ms"`
	MS       int64     `json:"ms"` // kunit_summary: the tests' own run time
	// With KWATCH_DEBUG_STATS=1 in kwatch's environment.
	Goroutines int `json:"goroutines"`
}

// kwatchProc is a running `kwatch --json` whose events are read as they come.
type kwatchProc struct {
	cmd    *exec.Cmd
	events chan *event
	log    string // its stderr (build output and errors)
}

// startKwatch runs kwatch --json on the guest vm picks, with args and env
// added to the bench's environment; its stderr goes to log.
func (b *bench) startKwatch(name string, env, vm []string, args ...string) (*kwatchProc, error) {
	log := filepath.Join(b.guest.dir, name+".log")
	errFile, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	defer errFile.Close()
	cmd := exec.Command(b.bin, slices.Concat([]string{"--json"}, vm, b.cfg.flags, args)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = errFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := proc.Start(cmd); err != nil {
		return nil, fmt.Errorf("starting kwatch: %w", err)
	}
	// Buffered deeply, so that reading never slows kwatch down during a flood.
	k := &kwatchProc{cmd: cmd, events: make(chan *event, 1<<17), log: log}
	go func() {
		defer close(k.events)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			e := new(event)
			if json.Unmarshal(sc.Bytes(), e) == nil {
				k.events <- e
			}
		}
	}()
	return k, nil
}

// next returns kwatch's next event, or an error when none comes within timeout.
func (k *kwatchProc) next(ctx context.Context, timeout time.Duration) (*event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e, ok := <-k.events:
		if !ok {
			return nil, fmt.Errorf("kwatch exited:\n%s", lastLines(k.log, 10))
		}
		return e, nil
	case <-t.C:
		return nil, fmt.Errorf("no event from kwatch for %s:\n%s", timeout, lastLines(k.log, 10))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitLoaded reads events up to the end of a cycle: nil after "loaded", an
// error after a failed build or load.
func (k *kwatchProc) waitLoaded(ctx context.Context, timeout time.Duration, seen func(*event)) error {
	for {
		e, err := k.next(ctx, timeout)
		if err != nil {
			return err
		}
		if seen != nil {
			seen(e)
		}
		switch e.Event {
		case "loaded":
			return nil
		case "build_failed", "load_failed":
			return fmt.Errorf("kwatch: %s: %s\n%s", e.Event, e.Message, lastLines(k.log, 10))
		}
	}
}

// until reads events up to the next one of type typ, and returns it.
func (k *kwatchProc) until(ctx context.Context, typ string) (*event, error) {
	for {
		e, err := k.next(ctx, time.Minute)
		if err != nil || e.Event == typ {
			return e, err
		}
	}
}

// stop ends kwatch like ^C does and makes sure nothing of it is left.
func (k *kwatchProc) stop() {
	pid := k.cmd.Process.Pid
	k.cmd.Process.Signal(syscall.SIGINT)
	drained := make(chan struct{})
	go func() {
		for range k.events {
		}
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(15 * time.Second):
		proc.KillGroup(pid, proc.Grace)
		<-drained
	}
	k.cmd.Wait()
	proc.KillGroup(pid, 0) // a make it started, should one have outlived it
}

// editor saves the next version of a module's source, like an editor does.
// It returns the end of the init line that version logs, and the save time,
// taken just before the write.
type editor interface {
	edit() (initLine string, saved time.Time, err error)
}

// kwatchRun is one kwatch variant to measure.
type kwatchRun struct {
	editor editor
	id     string   // names its files
	name   string   // its row
	vm     []string // the guest's flags
	dir    string   // what kwatch watches
	args   []string // more flags
	idle   bool     // also measure kwatch's idle CPU and memory after the edits
	kunit  bool     // the module has KUnit suites: a sample ends at their kunit_summary
	// between, if set, runs after each edit was loaded: another
	// measurement that needs the same machine as kwatch's (a compiler floor).
	// It must end well within 2 s of the load, when kwatch's correctness
	// net would start a full make beside it.
	between func(context.Context) error
}

// kwatch measures one kwatch variant: kwatch watches r.dir on the guest
// r.vm picks; after its first load, every edit is timed from the save to
// the new init line's arrival in the event stream.
func (b *bench) kwatch(ctx context.Context, r kwatchRun) (*variant, error) {
	v := &variant{name: r.name, steps: []string{"debounce", "build", "upload", "reload", "log line + rest"}}
	p := r.editor
	k, err := b.startKwatch(r.id, nil, r.vm, append(r.args, r.dir)...)
	if err != nil {
		return v, err
	}
	defer k.stop()
	if err := k.waitLoaded(ctx, 10*time.Minute, nil); err != nil {
		return v, fmt.Errorf("first load: %w", err)
	}
	s0, err := readProc(k.cmd.Process.Pid)
	if err != nil {
		return v, err
	}
	for range b.cfg.edits {
		want, saved, err := p.edit()
		if err != nil {
			return v, err
		}
		var started, line time.Time
		var loaded *event
		err = k.waitLoaded(ctx, 5*time.Minute, func(e *event) {
			switch {
			case e.Event == "build_start" && started.IsZero():
				started = e.Time
			case e.Event == "kmsg" && strings.HasSuffix(e.Message, want):
				line = e.Time
			case e.Event == "loaded":
				loaded = e
			}
		})
		if err != nil {
			return v, err
		}
		if line.IsZero() {
			return v, fmt.Errorf("a new version loaded but its init line %q never came", want)
		}
		if r.kunit {
			sum, err := k.until(ctx, "kunit_summary")
			if err != nil {
				return v, err
			}
			line = sum.Time
			v.tests = append(v.tests, ms(sum.MS))
		}
		debounce := started.Sub(saved)
		build := ms(loaded.BuildMS)
		upload := ms(loaded.UploadMS)
		reload := ms(loaded.ReloadMS)
		total := line.Sub(saved)
		v.add(total, debounce, build, upload, reload, total-debounce-build-upload-reload)
		// Let the cycle's last steps (the good copy, the log sync) settle.
		time.Sleep(300 * time.Millisecond)
		if r.between != nil {
			if err := r.between(ctx); err != nil {
				return v, err
			}
		}
	}
	s1, err := readProc(k.cmd.Process.Pid)
	if err != nil {
		return v, err
	}
	v.cost = s1.since(s0, 0)
	if r.idle {
		b.res.cost.idle, err = measureIdle(ctx, k.cmd.Process.Pid, b.cfg.idle)
		if err != nil {
			return v, err
		}
	}
	return v, nil
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

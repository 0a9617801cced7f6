package builder

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"sort"
	"strings"
	"time"

	"kwatch/proc"
)

// Mismatch is what the correctness net found: the full make built a module
// that differs in code or data from the one the fast path built.
type Mismatch struct {
	KO       string   // the full make's module (it replaced the fast path's)
	Sections []string // the sections that differ; empty if the full make failed
	Err      error    // why the full make failed, if it did
}

func (e *Mismatch) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("the fast path built a module where the full make failed (%v)", e.Err)
	}
	return fmt.Sprintf("the full make's %s differs from the fast path's in %s", e.KO, strings.Join(e.Sections, ", "))
}

// netRun is a correctness net's check, from BeginVerify until it returns.
type netRun struct {
	cancel  context.CancelFunc
	started bool // the check runs (under Make.mu); StopVerify waits for it
	done    chan struct{}
}

// BeginVerify starts the fast path's correctness net: call it when the
// guest is idle after a fast build, and run the check it returns in the
// background. The check runs the full make in place at low priority: after
// a correct fast build Kbuild's records leave it nothing to do, and a step
// the fast path missed or ran differently is one make redoes. It returns
// nil when the module stayed the same in code and data (build ids aside),
// when a Build stopped it, or when a source changed meanwhile. On a
// Mismatch the fast path stays off for the rest of the Make's life.
// BeginVerify returns nil when the last build was not a fast one.
//
// The build dir is claimed here, not when the check runs: a Build that
// starts after BeginVerify returns stops the check, even one that has not
// begun, so their makes never share the dir.
func (m *Make) BeginVerify(ctx context.Context) func() (*Mismatch, error) {
	m.Settle()
	m.StopVerify()
	m.mu.Lock()
	defer m.mu.Unlock()
	ko := m.lastKO
	if !m.lastFast || m.noFast {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	run := &netRun{cancel: cancel, done: make(chan struct{})}
	m.net = run
	return func() (*Mismatch, error) {
		defer cancel()
		m.mu.Lock()
		stopped := m.net != run
		run.started = !stopped
		m.mu.Unlock()
		if stopped {
			return nil, nil
		}
		defer close(run.done)
		return m.verify(ctx, ko)
	}
}

func (m *Make) verify(ctx context.Context, ko string) (*Mismatch, error) {
	before, err := loadSections(ko)
	if err != nil {
		return nil, err
	}
	s := newScanner(m.Dir, io.Discard, argValue(m.Args, "RUSTC=", "rustc"), argValue(m.Args, "-C", "the kernel build dir"))
	cmd := exec.Command("nice", append([]string{"-n", "19", "make"}, m.Args...)...)
	cmd.Dir, cmd.Env = m.Dir, withoutMakeVars(m.Env)
	cmd.Stdout, cmd.Stderr = s, s
	stamps := sourceStamps(m.Dir)
	start := time.Now().Add(-20 * time.Millisecond) // as in Build
	err = proc.Run(ctx, cmd)
	s.flush()
	if !maps.Equal(stamps, sourceStamps(m.Dir)) {
		// A save during the make: make built sources the fast path never
		// saw, so a difference proves nothing. As in Build, the next build
		// runs the full make and compiles again what this make wrote.
		m.setGraph(nil, ErrSourcesChanged, "", false)
		return nil, removeOutputsSince(m.Dir, start)
	}
	if ctx.Err() != nil {
		return nil, nil
	}
	mm := &Mismatch{KO: ko}
	if err != nil {
		mm.Err = s.failure(err)
	} else if after, err := loadSections(ko); err != nil {
		mm.Err = err
	} else {
		mm.Sections = differentSections(before, after)
		if len(mm.Sections) == 0 {
			return nil, nil
		}
	}
	m.mu.Lock()
	m.noFast, m.graph = true, nil
	m.mu.Unlock()
	return mm, nil
}

// StopVerify stops the correctness net's check and waits until its make is gone.
func (m *Make) StopVerify() {
	m.mu.Lock()
	run := m.net
	m.net = nil
	started := run != nil && run.started
	m.mu.Unlock()
	if run != nil {
		run.cancel()
	}
	if started {
		<-run.done
	}
}

// loadSections reads a module's sections that hold code or data: all but
// debug info and the build id, which record where and how, not what.
func loadSections(path string) (map[string][]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	secs := map[string][]byte{}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Type == elf.SHT_NULL || !isCodeOrData(s.Name) {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("reading section %s of %s: %w", s.Name, path, err)
		}
		secs[s.Name] = data
	}
	return secs, nil
}

func isCodeOrData(name string) bool {
	for _, p := range []string{".debug", ".rela.debug", ".zdebug", ".BTF", ".note.gnu.build-id", ".gnu_debuglink"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// differentSections names the sections present in one map but not the
// other, or present in both with different contents.
func differentSections(a, b map[string][]byte) []string {
	var diff []string
	for name, data := range a {
		if other, ok := b[name]; !ok || !bytes.Equal(data, other) {
			diff = append(diff, name)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			diff = append(diff, name)
		}
	}
	sort.Strings(diff)
	return diff
}

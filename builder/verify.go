package builder

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"

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

// netRun is a running Verify.
type netRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Verify is the fast path's correctness net; call it when the guest is idle
// after a fast build. It runs the full make in place at low priority: after
// a correct fast build Kbuild's records leave it nothing to do, and a step
// the fast path missed or ran differently is one make redoes. It returns
// nil when the module stayed the same in code and data (build ids aside),
// when the last build was not a fast one, or when a Build stopped it. On a
// Mismatch the fast path stays off for the rest of the Make's life.
func (m *Make) Verify(ctx context.Context) (*Mismatch, error) {
	m.StopVerify()
	m.mu.Lock()
	ko, fast := m.lastKO, m.lastFast && !m.noFast
	ctx, cancel := context.WithCancel(ctx)
	run := &netRun{cancel: cancel, done: make(chan struct{})}
	if fast {
		m.net = run
	}
	m.mu.Unlock()
	defer cancel()
	if !fast {
		return nil, nil
	}
	defer close(run.done)
	before, err := loadSections(ko)
	if err != nil {
		return nil, err
	}
	s := newScanner(m.Dir, io.Discard, argValue(m.Args, "RUSTC=", "rustc"), argValue(m.Args, "-C", "the kernel build dir"))
	cmd := exec.Command("nice", append([]string{"-n", "19", "make"}, m.Args...)...)
	cmd.Dir, cmd.Env = m.Dir, withoutMakeVars(m.Env)
	cmd.Stdout, cmd.Stderr = s, s
	err = proc.Run(ctx, cmd)
	s.flush()
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

// StopVerify stops a running Verify and waits until its make is gone.
func (m *Make) StopVerify() {
	m.mu.Lock()
	run := m.net
	m.net = nil
	m.mu.Unlock()
	if run != nil {
		run.cancel()
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

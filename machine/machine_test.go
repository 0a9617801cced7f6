package machine

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
)

// The health probe: a VM whose SSH server stays silent for sshDeadAfter is
// dead; one answer in between starts the count again.
func TestSilence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		answers []bool // one per probe, probeEvery apart
		dead    int    // the probe that finds it dead, or -1
	}{
		{"answering", []bool{true, true, true, true, true, true, true}, -1},
		{"silent", []bool{false, false, false, false, false, false, false}, 4},
		{"answers once in between", []bool{false, false, false, true, false, false, false, false, false}, 8},
		{"silent briefly", []bool{false, false, true, true}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s silence
			dead := -1
			for i, a := range tt.answers {
				now := t0.Add(time.Duration(i) * probeEvery)
				// Between probes the server is not asked.
				if i > 0 && s.dead(now.Add(-time.Second), func() bool { t.Fatal("asked before a probe was due"); return false }) {
					t.Fatal("dead between probes")
				}
				if s.dead(now, func() bool { return a }) && dead < 0 {
					dead = i
				}
			}
			if dead != tt.dead {
				t.Errorf("found dead at probe %d, want %d", dead, tt.dead)
			}
		})
	}
}

type discard struct{}

func (discard) Report(event.Event) {}

// The owner may spend minutes on a boot or a dial; nobody else waits for it
// longer than they want to, and the boot id is always at hand.
func TestOthersDoNotWaitForTheOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept() // a server that never says a word
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	m := Start(context.Background(), Config{Report: discard{}, BootTimeout: time.Minute,
		SSH: ssh.Config{Addr: ln.Addr().String(), User: "root", KnownHosts: filepath.Join(t.TempDir(), "known_hosts")}})
	first := make(chan error, 1)
	go func() { _, err := m.Session(context.Background()); first <- err }()
	time.Sleep(100 * time.Millisecond) // the owner is dialling now

	start := time.Now()
	if id := m.BootID(); id != "" {
		t.Errorf("BootID = %q before any boot", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := m.Session(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Session = %v, want the caller's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a caller waited %s for the owner", took)
	}
	m.Close()
	select {
	case err := <-first:
		if err == nil {
			t.Error("Session succeeded against a silent server")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the owner's dial")
	}
	if _, err := m.Session(context.Background()); err == nil {
		t.Error("Session after Close succeeded")
	}
}

// Relaunch swaps the managed VM's launch only when its ident changed, and
// says so; the next Session boots it.
func TestRelaunch(t *testing.T) {
	rec := &notices{}
	v := &vm.Process{StateDir: t.TempDir(), Kind: guest.Nix, Ident: "/nix/store/a-vm"}
	m := Start(context.Background(), Config{VM: v, Report: rec})
	defer m.Close()
	if m.Running() || !m.Managed() || m.ConsoleLog() != "" {
		t.Errorf("a VM never booted: Running %v, Managed %v, ConsoleLog %q", m.Running(), m.Managed(), m.ConsoleLog())
	}
	if err := m.Relaunch(context.Background(), "/nix/store/a-vm", nil); err != nil || len(rec.get()) != 0 {
		t.Errorf("same ident: %v, notices %q", err, rec.get())
	}
	launched := false
	launch := func(int, string) (*exec.Cmd, error) { launched = true; return nil, errors.New("not in this test") }
	if err := m.Relaunch(context.Background(), "/nix/store/b-vm", launch); err != nil {
		t.Fatal(err)
	}
	if got := rec.get(); len(got) != 1 || !strings.Contains(got[0], "configuration changed") {
		t.Errorf("notices %q, want one about the changed configuration", got)
	}
	if _, err := m.Session(context.Background()); err == nil || !launched {
		t.Errorf("Session = %v, launched %v: want the new launcher tried", err, launched)
	}
}

type notices struct {
	mu  sync.Mutex
	msg []string
}

func (n *notices) Report(e event.Event) {
	if e.Type == event.KindNotice {
		n.mu.Lock()
		n.msg = append(n.msg, e.Message)
		n.mu.Unlock()
	}
}

func (n *notices) get() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msg...)
}

// After a failed boot, the kernel log stream, which asks every second, gets
// that failure instead of one boot per second; a Session boots again.
func TestLogSessionAfterFailedBoot(t *testing.T) {
	var mu sync.Mutex
	launches := 0
	launch := func(int, string) (*exec.Cmd, error) {
		mu.Lock()
		defer mu.Unlock()
		launches++
		return nil, errors.New("an unbootable configuration")
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return launches }
	v := &vm.Process{StateDir: t.TempDir(), Kind: guest.Nix, Ident: "/nix/store/a-vm", Launch: launch}
	m := Start(context.Background(), Config{VM: v, Report: discard{}})
	defer m.Close()
	ctx := context.Background()
	for i := range 4 { // the first boots: nothing failed yet
		if _, err := m.LogSession(ctx); err == nil {
			t.Fatalf("LogSession %d succeeded with an unbootable VM", i)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("%d boots for 4 LogSessions, want 1", n)
	}
	if _, err := m.Session(ctx); err == nil {
		t.Fatal("Session succeeded with an unbootable VM")
	}
	if n := count(); n != 2 {
		t.Errorf("%d boots after a Session, want 2", n)
	}
}

package nix

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kwatch/nix/nixtest"
)

// TestBuildCancel cancels a running nix build and checks that Build returns
// the context's error and that no process of the build is left.
func TestBuildCancel(t *testing.T) {
	nixtest.Need(t)
	// A fractional sleep time nobody else uses marks the builder's process.
	marker := "3000." + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	flake := t.TempDir()
	nixtest.WriteFile(t, filepath.Join(flake, "flake.nix"), `{
  outputs = { self }: {
    packages.x86_64-linux.slow = derivation {
      name = "slow";
      system = "x86_64-linux";
      builder = "/bin/bash";
      outputs = [ "out" ];
      PATH = "/usr/bin:/bin";
      args = [ "-c" "echo started; sleep `+marker+`; echo done" ];
    };
  };
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	log := &watchWriter{want: "started", seen: started}
	errc := make(chan error, 1)
	go func() {
		_, err := Settings{}.Build(ctx, flake+"#slow", filepath.Join(t.TempDir(), "result"), log)
		errc <- err
	}()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("the build ended before it was cancelled: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the build did not start")
	}
	for !processWithArg(marker) {
		time.Sleep(10 * time.Millisecond) // the builder echoes "started" just before its sleep
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Build after cancel = %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for processWithArg(marker) {
		if time.Now().After(deadline) {
			t.Fatal("the builder's sleep survived the cancelled build")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchWriter closes seen once the text written to it contains want.
type watchWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	done bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

// processWithArg reports whether a running process has arg in its command line.
func processWithArg(arg string) bool {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "\x00"+arg) {
			return true
		}
	}
	return false
}

// TestBuildersReachNix: a --builders value reaches the nix command line of a
// build, and nix uses it (with max-jobs 0 nothing builds here, so nix lists
// that remote machines were tried); without one, nix.conf's setting (none
// here) stands. Config reports the value too, as kwatch doctor shows it.
func TestBuildersReachNix(t *testing.T) {
	nixtest.Need(t)
	t.Setenv("NIX_CONFIG", os.Getenv("NIX_CONFIG")+"\nmax-jobs = 0")
	const builders = "ssh://kwatch-builder.invalid x86_64-linux"
	flake := t.TempDir()
	// A name no store has built yet, so nix must build it.
	nixtest.WriteFile(t, filepath.Join(flake, "flake.nix"), `{
  outputs = { self }: {
    packages.x86_64-linux.x = derivation {
      name = "kwatch-builders-`+strconv.FormatInt(time.Now().UnixNano(), 10)+`";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo > $out" ];
    };
  };
}
`)
	for _, tt := range []struct {
		s    Settings
		want string
	}{
		{Settings{Builders: builders}, "remote machines may not have"},
		{Settings{}, "enable remote builds"},
	} {
		_, err := tt.s.Build(t.Context(), flake+"#x", filepath.Join(t.TempDir(), "result"), nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("nix build with %+v: %v; want an error saying %q", tt.s, err, tt.want)
		}
		conf, err := tt.s.Config(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got := conf["builders"]; (got == builders) != (tt.s.Builders != "") {
			t.Errorf("nix show-config with %+v says builders = %q", tt.s, got)
		}
	}
}

// TestBuildProgress: a build shown through Progress prints nix's build log
// and where it is (the derivation, builds done of those expected), on a
// terminal in a status line below the log; and a failed build's error is
// still nix's message.
func TestBuildProgress(t *testing.T) {
	nixtest.Need(t)
	flake := t.TempDir()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	nixtest.WriteFile(t, filepath.Join(flake, "flake.nix"), `{
  outputs = { self }: let drv = name: script: derivation {
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-c" script ];
    }; in {
    packages.x86_64-linux.ok = drv "kwatch-progress-`+stamp+`" "echo hello; sleep 1; echo world; echo > $out";
    packages.x86_64-linux.term = drv "kwatch-progress-term-`+stamp+`" "echo hello; echo > $out";
    packages.x86_64-linux.bad = drv "kwatch-progress-bad-`+stamp+`" "echo boom; exit 3";
  };
}
`)
	var plain bytes.Buffer
	if _, err := (Settings{}).Build(t.Context(), flake+"#ok", filepath.Join(t.TempDir(), "result"), &Progress{W: &plain}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^nix: 0m0\ds building kwatch-progress-\d+$`).MatchString(lines[0]) || lines[1] != "kwatch-progress> hello" || lines[2] != "kwatch-progress> world" {
		t.Errorf("not a terminal: %q, want one line for the build, then its log", plain.String())
	}

	var term bytes.Buffer
	if _, err := (Settings{}).Build(t.Context(), flake+"#term", filepath.Join(t.TempDir(), "result"), &Progress{W: &term, Terminal: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kwatch-progress-term> hello\n", "\r\x1b[Knix: 0m0", " · building kwatch-progress-term-" + stamp, "0/1 built (0%)", "1/1 built (100%)"} {
		if !strings.Contains(term.String(), want) {
			t.Errorf("on a terminal: %q does not show %q", term.String(), want)
		}
	}
	if !strings.HasSuffix(term.String(), "\r\x1b[K") {
		t.Errorf("on a terminal: %q does not end by clearing the status line", term.String())
	}

	var bad bytes.Buffer
	_, err := (Settings{}).Build(t.Context(), flake+"#bad", filepath.Join(t.TempDir(), "result"), &Progress{W: &bad})
	if err == nil || !strings.Contains(err.Error(), "failed with exit code 3") || !strings.Contains(bad.String(), "kwatch-progress-bad> boom\n") {
		t.Errorf("a failed build: %v, log %q; want nix's error, and the build's log shown", err, bad.String())
	}
}

// Package nix is everything kwatch says to Nix: it writes new flake projects,
// builds flake outputs, reads a derivation's build environment for fast
// incremental builds, and starts the VM script of a NixOS configuration.
package nix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"

	"kwatch/proc"
)

// Settings are what the user asked of every nix command kwatch runs. Nothing
// else is set: nix.conf and NIX_CONFIG decide the rest (builders, substituters,
// max-jobs), so a team's remote builders serve kwatch's builds unchanged.
type Settings struct {
	Builders string // nix's --builders; "" = nix.conf's
}

// command returns a nix command with flakes enabled, so kwatch works for
// users who have not enabled them in nix.conf. It inherits the environment,
// NIX_CONFIG included.
func (s Settings) command(args ...string) *exec.Cmd {
	return s.commandWith("nix-command flakes", args...)
}

func (s Settings) commandWith(features string, args ...string) *exec.Cmd {
	all := []string{"--extra-experimental-features", features}
	if s.Builders != "" {
		all = append(all, "--builders", s.Builders)
	}
	return exec.Command("nix", append(all, args...)...)
}

// Build runs `nix build <installable> --json --out-link <outLink> -L`, streaming
// nix's log to log, and returns the output paths, "out" first.
//
// A *Progress as log gets nix's internal-json log, which it shows with where
// the build is.
func (s Settings) Build(ctx context.Context, installable, outLink string, log io.Writer) ([]string, error) {
	cmd := s.command("build", installable, "--json", "--out-link", outLink, "--print-build-logs")
	var stdout bytes.Buffer
	tail := &tailWriter{w: log}
	cmd.Stdout = &stdout
	cmd.Stderr = tail
	if p, ok := log.(*Progress); ok {
		cmd.Args = append(cmd.Args, "--log-format", "internal-json")
		tail = &tailWriter{}
		p.mu.Lock()
		p.lines = tail
		p.mu.Unlock()
		cmd.Stderr = p
		defer p.Close()
	}
	if err := proc.Run(ctx, cmd); err != nil {
		return nil, nixError(ctx, "nix build "+installable, err, tail)
	}
	var results []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		return nil, fmt.Errorf("reading the JSON of nix build %s: %w", installable, err)
	}
	var paths []string
	for _, r := range results {
		names := make([]string, 0, len(r.Outputs))
		for name := range r.Outputs {
			names = append(names, name)
		}
		sort.Slice(names, func(i, j int) bool {
			if (names[i] == "out") != (names[j] == "out") {
				return names[i] == "out"
			}
			return names[i] < names[j]
		})
		for _, name := range names {
			paths = append(paths, r.Outputs[name])
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("nix build %s produced no output paths", installable)
	}
	return paths, nil
}

// nixError is one line saying what failed, then nix's own error message
// (none when the context was cancelled: then nix was killed, not wrong).
func nixError(ctx context.Context, what string, err error, tail *tailWriter) error {
	msg := tail.errorLines()
	if ctx.Err() != nil || msg == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w\n%s", what, err, msg)
}

// tailWriter passes writes on to w (if any) and remembers the last lines.
type tailWriter struct {
	w       io.Writer
	mu      sync.Mutex
	partial []byte
	lines   []string
}

const tailLines = 40

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.lines) > tailLines {
		t.lines = append(t.lines[:0], t.lines[len(t.lines)-tailLines:]...)
	}
	if t.w == nil {
		return len(p), nil
	}
	return t.w.Write(p)
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// errorLines returns nix's last "error:" message, or the last lines when
// there is none, without colour codes.
func (t *tailWriter) errorLines() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string{}, t.lines...)
	if len(t.partial) > 0 {
		lines = append(lines, string(t.partial))
	}
	for i := range lines {
		lines[i] = strings.TrimRight(ansi.ReplaceAllString(lines[i], ""), " \r")
	}
	start := max(len(lines)-10, 0)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "error:") {
			start = i
			break
		}
	}
	return strings.TrimSpace(strings.Join(lines[start:], "\n"))
}

// Config is nix's configuration as the commands kwatch runs see it (`nix
// show-config`: nix.conf, NIX_CONFIG and the Settings): builders, max-jobs,
// experimental-features. Only nix-command is enabled for the asking, so
// experimental-features lists flakes only when the user's configuration does.
func (s Settings) Config(ctx context.Context) (map[string]string, error) {
	cmd := s.commandWith("nix-command", "show-config")
	var stdout bytes.Buffer
	tail := &tailWriter{}
	cmd.Stdout, cmd.Stderr = &stdout, tail
	if err := proc.Run(ctx, cmd); err != nil {
		return nil, nixError(ctx, "nix show-config", err, tail)
	}
	conf := map[string]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok {
			conf[k] = v
		}
	}
	return conf, nil
}

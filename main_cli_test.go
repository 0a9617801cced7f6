package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `kwatch -h` names every subcommand (kwatch gdb was missing) and --version.
func TestUsageListsEverySubcommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := exitCode(run(context.Background(), []string{"-h"}, &stdout, &stderr), &stderr); code != 0 {
		t.Fatalf("kwatch -h: exit %d", code)
	}
	for _, c := range subcommands() {
		if !strings.Contains(stderr.String(), "kwatch "+c.name+" ") {
			t.Errorf("kwatch -h does not list kwatch %s:\n%s", c.name, stderr.String())
		}
	}
	for _, want := range []string{"kwatch --version", "-kdir DIR", "-kernel FILE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("kwatch -h does not mention %q", want)
		}
	}
}

// A bad flag is one error line and one hint, in every subcommand, not the
// flag list printed above them.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"vm", "up", "--bogus"}, {"gdb", "--bogus"}, {"init", "--bogus"}, {"--debounce", "x"}} {
		var stdout, stderr bytes.Buffer
		code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 2 || !strings.HasPrefix(lines[0], "kwatch: error: ") || !strings.HasPrefix(lines[1], "kwatch: hint: run `kwatch") {
			t.Errorf("kwatch %s: exit %d, stderr:\n%s\nwant exit 2, an error line and a hint", strings.Join(args, " "), code, stderr.String())
		}
	}
}

// --version says which commit the binary was built from. go build stamps
// it in a clone, but not in a git worktree (.git is a file there): then the
// test builds kwatch in a fresh clone of HEAD, as a user would.
func TestVersion(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not in a git checkout: go build stamps no revision")
	}
	want := strings.TrimSpace(string(rev))
	bin := kwatchBin
	if fi, err := os.Stat(".git"); err != nil || !fi.IsDir() {
		if testing.Short() {
			t.Skip("in a git worktree: builds kwatch in a fresh clone")
		}
		clone := filepath.Join(t.TempDir(), "clone")
		bin = filepath.Join(t.TempDir(), "kwatch")
		for _, cmd := range []*exec.Cmd{
			exec.Command("git", "clone", "-q", "--shared", "--no-checkout", ".", clone),
			exec.Command("git", "-C", clone, "checkout", "-q", want),
			exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "."),
		} {
			if cmd.Args[0] == "go" {
				cmd.Dir = clone
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
			}
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "kwatch ") || !strings.Contains(string(out), "git "+want) {
		t.Fatalf("kwatch --version: %v, %q; want the revision %s", err, out, want)
	}
}

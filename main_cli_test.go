package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kwatch/guest/vm/vmtest"
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
	stderr.Reset()
	if code := exitCode(run(context.Background(), []string{"vm", "-h"}, &stdout, &stderr), &stderr); code != 0 || !strings.Contains(stderr.String(), "kwatch vm ssh") {
		t.Errorf("kwatch vm -h: exit %d\n%s", code, stderr.String())
	}
	stderr.Reset()
	run(context.Background(), []string{"-h"}, &stdout, &stderr)
	for _, want := range []string{"kwatch --version", "-kdir DIR", "-kernel FILE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("kwatch -h does not mention %q", want)
		}
	}
}

// A bad flag is one error line and one hint, in every subcommand, not the
// flag list printed above them.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"vm", "up", "--bogus"}, {"gdb", "--bogus"}, {"init", "--bogus"}, {"doctor", "--bogus"}, {"completion", "--bogus"}, {"--debounce", "x"}} {
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

// The completion scripts parse in their shells, offer every flag of every
// subcommand (they are made from the flag definitions), and complete in bash.
func TestCompletion(t *testing.T) {
	for _, sh := range []struct{ name, check string }{
		{"bash", "bash -n"}, {"zsh", "zsh -n"}, {"fish", "fish --no-execute"},
	} {
		t.Run(sh.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"completion", sh.name}, &stdout, &stderr); err != nil {
				t.Fatal(err)
			}
			for _, c := range append(subcommands(), subcommand{flags: (*options).watchFlags}) {
				if c.name != "" && !strings.Contains(stdout.String(), c.name) {
					t.Errorf("the %s script does not offer kwatch %s", sh.name, c.name)
				}
				for _, f := range compFlags(c.flags) {
					want := "--" + f.name
					if sh.name == "fish" {
						want = "-l " + f.name
					}
					if !strings.Contains(stdout.String(), want) {
						t.Errorf("the %s script does not offer %s of kwatch %s", sh.name, want, c.name)
					}
				}
			}
			argv := strings.Fields(sh.check)
			if _, err := exec.LookPath(argv[0]); err != nil {
				if sh.name == "bash" {
					t.Fatal("no bash")
				}
				t.Skipf("%s is not installed (scripts/setup.sh installs it)", sh.name)
			}
			script := filepath.Join(t.TempDir(), "kwatch."+sh.name)
			if err := os.WriteFile(script, stdout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(argv[0], append(argv[1:], script)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", sh.check, script, err, out)
			}
			if sh.name == "fish" { // fish says what it would offer for a line
				out, err := exec.Command("fish", "-c", `source $argv[1]; complete -C"kwatch vm "; complete -C"kwatch --acc"`, script).CombinedOutput()
				var got []string
				for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					word, _, _ := strings.Cut(line, "\t")
					got = append(got, word)
				}
				if err != nil || strings.Join(got, " ") != "down ssh status up --accel --accept-host-key" {
					t.Errorf("fish completes kwatch vm and --acc to %q (%v)", out, err)
				}
			}
			if sh.name != "bash" {
				return
			}
			// What bash offers, for a line typed so far.
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "mymod"), 0o755)
			for _, tt := range []struct{ line, want string }{
				{"kwatch --vm ", "qemu nix ssh"},
				{"kwatch --kd", "--kdir"},
				{"kwatch vm ", "up down status ssh"},
				{"kwatch vm up --bo", "--boot-timeout"},
				{"kwatch completion ", "bash zsh fish"},
				{"kwatch gdb --kdir my", "mymod"},
				{"kwatch doctor --", "--builders --json --kdir --kernel --modules-dir"},
			} {
				words := strings.Fields(tt.line)
				if strings.HasSuffix(tt.line, " ") {
					words = append(words, "")
				}
				var quoted []string
				for _, w := range words {
					quoted = append(quoted, "'"+w+"'")
				}
				cmd := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(`+strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _kwatch; echo "${COMPREPLY[*]}"`, "bash", script)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
					t.Errorf("bash completes %q to %q (%v), want %q", tt.line, got, err, tt.want)
				}
			}
		})
	}
}

// kwatch doctor on this machine: every installed kernel is in the report,
// and the default `kwatch DIR` works here (exit 0). A kernel whose modules
// dir lacks the NIC driver cannot boot: exit 1 and the fix.
func TestDoctor(t *testing.T) {
	ks := vmtest.Debian()
	if len(ks) == 0 {
		t.Skip("no /boot/vmlinuz-*: run scripts/setup.sh")
	}
	t.Run("text", func(t *testing.T) {
		t.Parallel()
		out, stderr, code := kwatchRun(t, "doctor")
		if code != 0 {
			t.Fatalf("kwatch doctor: exit %d, stderr %q\n%s", code, stderr, out)
		}
		for _, k := range ks {
			if !strings.Contains(out, k.Release) {
				t.Errorf("kwatch doctor does not mention %s:\n%s", k.Release, out)
			}
		}
		if !strings.Contains(out, "`kwatch DIR` works here") {
			t.Errorf("kwatch doctor does not say kwatch DIR works:\n%s", out)
		}
	})
	// A --builders value reaches nix's command line: nix itself reports it.
	t.Run("json, builders", func(t *testing.T) {
		t.Parallel()
		const builders = "ssh://kwatch-builder.invalid x86_64-linux"
		out, _, code := kwatchRun(t, "doctor", "--json", "--builders", builders)
		var r struct {
			DefaultWorks bool `json:"default_works"`
			Kernels      []struct {
				Release string `json:"release"`
			} `json:"kernels"`
			Tools []struct{ Name, Detail string } `json:"tools"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.DefaultWorks || len(r.Kernels) < len(ks) {
			t.Fatalf("kwatch doctor --json: exit %d, %v, %+v\n%s", code, err, r, out)
		}
		for _, tool := range r.Tools {
			if tool.Name == "nix" && !strings.Contains(tool.Detail, "builders: "+builders) {
				t.Errorf("nix does not report the builders passed with --builders: %q", tool.Detail)
			}
		}
	})
	t.Run("no NIC driver", func(t *testing.T) {
		t.Parallel()
		empty := t.TempDir()
		os.WriteFile(filepath.Join(empty, "modules.dep"), nil, 0o644)
		out, _, code := kwatchRun(t, "doctor", "--kernel", ks[0].Image, "--modules-dir", empty)
		if code != 1 || !strings.Contains(out, empty+" has no e1000 module") || !strings.Contains(out, "fix: ") {
			t.Errorf("kwatch doctor with a modules dir without the NIC driver: exit %d\n%s\nwant exit 1, the missing driver and its fix", code, out)
		}
		_, stderr, code := kwatchRun(t, "doctor", "--kernel", filepath.Join(empty, "nope"))
		if code != 2 || !strings.Contains(stderr, "kwatch: hint: ") {
			t.Errorf("kwatch doctor --kernel nope: exit %d, %q; want a usage error", code, stderr)
		}
	})
}

package replay

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// CaptureArgs are make arguments that make Kbuild's top-level make, when it
// builds the modules, write the environment it exports to its sub-makes to
// file descriptor CaptureFD (NUL-separated, each dump ended by an empty
// entry). The target's name starts with a dot so it never becomes a
// makefile's default goal, and .DEFAULT_GOAL is reset for the same reason.
// Kbuild reads the words of MAKEFLAGS that do not start with "--" as
// single-letter flags, and the words after an --eval's first space are
// such words: none may hold an "s" (silent) or an "i" (modpost -n).
var CaptureArgs = []string{
	"--eval=.PHONY: .kwatch-env",
	"--eval=modules: .kwatch-env",
	"--eval=.kwatch-env: ; @{ env -0; head -c1 /dev/zero; } >&3",
	"--eval=.DEFAULT_GOAL :=",
}

// CaptureFD is the descriptor CaptureArgs write to: the child's first
// extra file (exec.Cmd.ExtraFiles[0]).
const CaptureFD = 3

// ParseEnv picks the environment of the innermost make from what
// CaptureArgs wrote (Kbuild's top Makefile may call itself once more in the
// kernel build dir), with make's per-run flags (the jobserver, -j and
// CaptureArgs) dropped from MAKEFLAGS.
func ParseEnv(dump []byte) ([]string, error) {
	var best []string
	bestLevel := -1
	for _, d := range bytes.Split(dump, []byte("\x00\x00")) {
		env := strings.Split(strings.TrimRight(string(d), "\x00"), "\x00")
		if len(env) < 2 {
			continue
		}
		level, _ := strconv.Atoi(lookup(env, "MAKELEVEL"))
		if level > bestLevel {
			best, bestLevel = env, level
		}
	}
	if best == nil {
		return nil, fmt.Errorf("make did not reach Kbuild's modules target")
	}
	out := make([]string, 0, len(best))
	for _, kv := range best {
		if v, ok := strings.CutPrefix(kv, "MAKEFLAGS="); ok {
			kv = "MAKEFLAGS=" + cleanMakeflags(v)
		}
		out = append(out, kv)
	}
	return out, nil
}

// cleanMakeflags drops the options that belong to one run of make. Words
// are separated by unescaped spaces; everything after "--" (the command
// line's variables) is kept.
func cleanMakeflags(flags string) string {
	words := splitEscaped(flags)
	var out []string
	for i, w := range words {
		if w == "--" {
			out = append(out, words[i:]...)
			break
		}
		switch {
		case strings.HasPrefix(w, "-j"), strings.HasPrefix(w, "--jobserver-"), strings.HasPrefix(w, "--eval="):
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

func splitEscaped(s string) []string {
	var words []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i])
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ' ':
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

func lookup(env []string, name string) string {
	v, _ := lookupOK(env, name)
	return v
}

// lookupOK is lookup that tells an empty variable from a missing one.
func lookupOK(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Steps returns the commands Kbuild's top Makefile runs for `modules` in an
// external module once its configuration is read (Linux 5.10 to 6.12: the
// $(build-dir), modules_check, modpost and modules rules), each set up with
// make's environment and working dir. jobs is make's -j.
func (g *Graph) Steps(jobs int) ([]*exec.Cmd, error) {
	srctree := lookup(g.Env, "abs_srctree")
	extmod := lookup(g.Env, "KBUILD_EXTMOD")
	if srctree == "" || extmod == "" {
		return nil, fmt.Errorf("make's environment lacks abs_srctree or KBUILD_EXTMOD")
	}
	scripts := filepath.Join(srctree, "scripts")
	for _, f := range []string{"Makefile.build", "Makefile.modpost", "Makefile.modfinal", "modules-check.sh"} {
		if _, err := os.Stat(filepath.Join(scripts, f)); err != nil {
			return nil, fmt.Errorf("this kernel's Kbuild has no %s", f)
		}
	}
	j := "-j" + strconv.Itoa(jobs)
	return []*exec.Cmd{
		g.command("MAKE", "make", j, "-f", filepath.Join(scripts, "Makefile.build"), "obj="+extmod, "need-builtin=1", "need-modorder=1"),
		g.modulesCheck(),
		g.command("MAKE", "make", j, "-f", filepath.Join(scripts, "Makefile.modpost")),
		g.command("MAKE", "make", j, "-f", filepath.Join(scripts, "Makefile.modfinal")),
	}, nil
}

// modulesCheck is the top Makefile's modules_check, which runs before modpost.
func (g *Graph) modulesCheck() *exec.Cmd {
	return g.command("CONFIG_SHELL", "sh", filepath.Join(lookup(g.Env, "abs_srctree"), "scripts", "modules-check.sh"),
		filepath.Join(lookup(g.Env, "KBUILD_EXTMOD"), "modules.order"))
}

// command runs the program make's variable names (def if unset) in the
// kernel build dir with make's environment.
func (g *Graph) command(variable, def string, args ...string) *exec.Cmd {
	prog := lookup(g.Env, variable)
	if prog == "" {
		prog = def
	}
	c := exec.Command(prog, args...)
	c.Dir, c.Env = g.Objtree, g.Env
	return c
}

// HasRust reports whether the module has Rust sources.
func (g *Graph) HasRust() bool {
	for _, o := range g.Objects {
		if strings.HasSuffix(o.Source, ".rs") {
			return true
		}
	}
	return false
}

// RustAnalyzer returns the command of Kbuild's rust-analyzer target, set to
// write rust-project.json into dir rather than into the module dir, where
// its shell redirection would follow a symlink; nil without the kernel's
// source tree.
func (g *Graph) RustAnalyzer(dir string) *exec.Cmd {
	srctree := lookup(g.Env, "abs_srctree")
	if srctree == "" {
		return nil
	}
	// For an external module the target writes $(extmod_prefix)rust-project.json.
	return g.command("MAKE", "make", "-f", filepath.Join(srctree, "scripts", "Makefile.build"), "obj=rust", "rust-analyzer",
		"extmod_prefix="+dir+"/")
}

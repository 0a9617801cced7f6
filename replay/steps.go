package replay

import (
	"os/exec"
	"path/filepath"
	"strings"
)

// Steps returns what the make that ran the module's sub-makes ran, in
// order: those sub-makes (Kbuild's Makefile.build, modpost, modfinal) and
// its own lines between them (modules_check), each with the dir and
// environment make gave it; nil if no such make was recorded.
func (g *Graph) Steps() []*exec.Cmd {
	var cmds []*exec.Cmd
	for _, l := range g.rec.top {
		cmds = append(cmds, shell(l, nil))
	}
	return cmds
}

// withoutRunFlags drops from MAKEFLAGS what belongs to the run of make a
// line was recorded in: the jobserver, and the recorder (SHELL=, one of the
// command line's variables, after "--"), so that a make a line runs again
// runs on its own. Words are separated by unescaped spaces.
func withoutRunFlags(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if flags, ok := strings.CutPrefix(kv, "MAKEFLAGS="); ok {
			var keep []string
			for _, w := range splitEscaped(flags) {
				if !strings.HasPrefix(w, "--jobserver-") && !strings.HasPrefix(w, "SHELL=") {
					keep = append(keep, w)
				}
			}
			kv = "MAKEFLAGS=" + strings.Join(keep, " ")
		}
		out = append(out, kv)
	}
	return out
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
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
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
// its shell redirection would follow a symlink; nil if no make that ran the
// module's sub-makes was recorded.
func (g *Graph) RustAnalyzer(dir string) *exec.Cmd {
	if len(g.rec.top) == 0 {
		return nil
	}
	l := g.rec.top[0]
	srctree := lookup(l.Env, "abs_srctree")
	if srctree == "" {
		srctree = resolve(l.Dir, lookup(l.Env, "srctree"))
	}
	make := lookup(l.Env, "MAKE")
	if make == "" {
		make = "make"
	}
	// For an external module the target writes $(extmod_prefix)rust-project.json.
	c := exec.Command(make, "-f", filepath.Join(srctree, "scripts", "Makefile.build"), "obj=rust", "rust-analyzer",
		"extmod_prefix="+dir+"/")
	c.Dir, c.Env = l.Dir, withoutRunFlags(l.Env)
	return c
}

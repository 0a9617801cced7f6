package replay

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kwatch/makelog"
)

func TestUnescape(t *testing.T) {
	tests := []struct{ raw, want, err string }{
		{"gcc -DX=$(pound)1 -c a.c", "gcc -DX=#1 -c a.c", ""},
		{`awk '!x[$$0]++'`, `awk '!x[$0]++'`, ""},
		{"echo $$$$", "echo $$", ""},
		{"gcc $(CC)", "", "make reference"},
	}
	for _, tt := range tests {
		got, err := unescape(tt.raw)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("unescape(%q) = %q, %v; want %q, %q", tt.raw, got, err, tt.want, tt.err)
		}
	}
}

// The lines below are what make ran under Linux 6.1 and 6.12 (traps and
// flags shortened): the fast path reads their shape only.
const (
	traps    = "set -e;    trap 'rm -f /m/a.o; trap - HUP; kill -s HUP $$' HUP;  trap 'rm -f /m/a.o; trap - INT; kill -s INT $$' INT; "
	compile  = traps + " echo '  CC [M]  /m/a.o'; gcc -Wp,-MMD,/m/.a.o.d -DKBUILD_MODNAME='\"a\"' -c -o /m/a.o /m/a.c ; ./tools/objtool/objtool --hacks=jump_label --module /m/a.o"
	fixdep   = "scripts/basic/fixdep /m/.a.o.d /m/a.o 'gcc -Wp,-MMD,/m/.a.o.d -DKBUILD_MODNAME='\\''\"a\"'\\'' -c -o /m/a.o /m/a.c' > /m/.a.o.cmd; rm -f /m/.a.o.d"
	objdep   = traps + " { echo ; echo '/m/a.o: $(wildcard ./tools/objtool/objtool)' ; } >> /m/.a.o.cmd"
	genksyms = traps + " if nm /m/a.o 2>/dev/null | grep -q ' __export_symbol_'; then gcc -E -D__GENKSYMS__ /m/a.c | scripts/genksyms/genksyms -r /dev/null >> /m/.a.o.cmd; fi"
	link     = traps + " echo '  LD [M]  /m/m.ko'; ld -r -T arch/x86/module.lds -o /m/m.ko /m/m.o /m/m.mod.o /m/.module-common.o; printf '%s\\n' 'savedcmd_/m/m.ko := ld -r -T arch/x86/module.lds -o /m/m.ko /m/m.o' > /m/.m.ko.cmd"
	btf      = traps + " echo '  BTF [M] /m/m.ko';   if [ ! -f vmlinux ]; then printf \"Skipping BTF for %s\\n\" /m/m.ko 1>&2; else LLVM_OBJCOPY=\"objcopy\" pahole -J --btf_base vmlinux /m/m.ko; ./tools/bpf/resolve_btfids/resolve_btfids -b vmlinux /m/m.ko; fi;"
)

func TestNoop(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{":", true},
		{traps, true},
		{traps + " :", true},
		{compile, false},
		{btf, false},
		{"echo ': trap'", false},
		{"set -e; (cd x; true)", false},
		{`set -e; trap "$(rm -f x; echo HUP)" HUP`, false},
	}
	for _, tt := range tests {
		if got := noop(tt.line); got != tt.want {
			t.Errorf("noop(%.60q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestRecordTail(t *testing.T) {
	tests := []struct {
		name, line, record string
		tail               string // "": the line stays whole
		headRuns           bool   // what comes before the tail does something
		removes            []string
	}{
		{"compile and fixdep", compile + "; " + fixdep, "/m/.a.o.cmd", fixdep, true, []string{"/m/.a.o.d"}},
		{"objtool's dependency line", objdep, "/m/.a.o.cmd", "{ echo ; echo '/m/a.o: $(wildcard ./tools/objtool/objtool)' ; } >> /m/.a.o.cmd", false, nil},
		{"genksyms appends CRCs", genksyms, "/m/.a.o.cmd", "", true, nil},
		{"link and its record", link, "/m/.m.ko.cmd", "printf '%s\\n' 'savedcmd_/m/m.ko := ld -r -T arch/x86/module.lds -o /m/m.ko /m/m.o' > /m/.m.ko.cmd", true, nil},
		{"another target's record", link, "/m/.m.o.cmd", "", true, nil},
		{"a relative record", "gcc -c -o a.o a.c; fixdep .a.o.d a.o 'x' > ./.a.o.cmd", "/m/.a.o.cmd", "fixdep .a.o.d a.o 'x' > ./.a.o.cmd", true, nil},
		{"a program appending", "gcc -c x; genksyms >> /m/.a.o.cmd", "/m/.a.o.cmd", "", true, nil},
		{"BTF", btf, "/m/.m.ko.cmd", "", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, tail, removes := recordTail(tt.line, "/m", tt.record)
			if tt.tail == "" {
				if tail != "" || head != tt.line {
					t.Errorf("split into %q and %q, want the line whole", head, tail)
				}
				return
			}
			if tail != tt.tail {
				t.Errorf("tail %q, want %q", tail, tt.tail)
			}
			if noop(head) == tt.headRuns {
				t.Errorf("head %q: want it to run: %v", head, tt.headRuns)
			}
			if !slices.Equal(removes, tt.removes) {
				t.Errorf("removes %q, want %q", removes, tt.removes)
			}
		})
	}
}

// A target's record waits for Finish only when no later line of the
// target reads or appends to it (genksyms' CRCs do), unless that line is a
// check that only names it as its output.
func TestDeferRecord(t *testing.T) {
	o := &Object{file: "/m/.a.o.cmd"}
	line := func(text string) makelog.Line { return makelog.Line{Text: text, Dir: "/k"} }
	readsRecord := traps + " grep -q SYMVER /m/.a.o.cmd"
	tests := []struct {
		name     string
		lines    []string
		checks   []string // lines replays saw write nothing
		now      int      // lines run now
		late     int
		depfiles []string
	}{
		{"compile, objtool's dependency line", []string{compile + "; " + fixdep, traps, objdep}, nil, 2, 2, []string{"/m/.a.o.d"}},
		{"compile, CRCs", []string{compile + "; " + fixdep, objdep, genksyms}, nil, 3, 0, nil},
		{"compile, CRCs while the module exports nothing", []string{compile + "; " + fixdep, objdep, genksyms}, []string{genksyms}, 2, 2, []string{"/m/.a.o.d"}},
		{"a check that reads the record", []string{compile + "; " + fixdep, objdep, readsRecord}, []string{readsRecord}, 3, 0, nil},
		{"no record written", []string{compile}, nil, 1, 0, nil},
	}
	for _, tt := range tests {
		var lines []makelog.Line
		for _, l := range tt.lines {
			lines = append(lines, line(l))
		}
		s := deferRecord(&recipe{lines: lines}, o, func(l makelog.Line) bool { return slices.Contains(tt.checks, l.Text) })
		if len(s.now) != tt.now || len(s.late) != tt.late || !slices.Equal(s.depfiles, tt.depfiles) {
			t.Errorf("%s: %d now, %d late, dependency files %q; want %d, %d, %q", tt.name, len(s.now), len(s.late), s.depfiles, tt.now, tt.late, tt.depfiles)
		}
		for _, l := range s.late {
			if !strings.HasPrefix(l.Text, "set -e; ") || strings.Contains(l.Text, "objtool --hacks") {
				t.Errorf("%s: late line %q", tt.name, l.Text)
			}
		}
	}
}

// Each recorded target's record must hold the command make ran for it:
// else make ran otherwise since, and the replay would not do what make does.
func TestSelfCheck(t *testing.T) {
	dir, _, rec := fakeBuild(t, "savedcmd_")
	g, err := Read(dir, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Replay(); err != nil {
		t.Fatalf("Replay() = %v", err)
	}
	if again, err := g.Reread(); again != g || err != nil {
		t.Fatalf("Reread() with no record changed = %p, %v; want the same graph", again, err)
	}
	// Another make (W=1) compiled a.o since.
	p := filepath.Join(dir, ".a.o.cmd")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, []byte(strings.Replace(string(data), "gcc -DX", "gcc -Wextra -DX", 1)), 0o644)
	if g, err = g.Reread(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Replay(); !errors.Is(err, ErrSelfCheck) || !strings.Contains(err.Error(), "a.o") {
		t.Errorf("Replay() = %v, want ErrSelfCheck naming a.o", err)
	}
}

func TestOutdated(t *testing.T) {
	dir := t.TempDir()
	old, now := time.Now().Add(-time.Hour), time.Now()
	file := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o644)
		os.Chtimes(p, mtime, mtime)
		return p
	}
	target := file("a.o", now)
	made := filepath.Join(dir, "made.o")
	p := &Replay{g: &Graph{rec: &Recording{recipes: map[string]*recipe{made: {}}}}}
	o := &Object{wild: map[string]bool{filepath.Join(dir, "gone-wild.h"): true}}
	tests := []struct {
		name    string
		prereqs []string
		want    bool
	}{
		{"older prerequisites", []string{file("a.c", old), file("a.h", old)}, false},
		{"a newer prerequisite", []string{file("b.c", old), file("b.h", now.Add(time.Second))}, true},
		{"as old as the target", []string{file("c.c", now)}, false},
		{"a missing wildcard prerequisite", []string{filepath.Join(dir, "gone-wild.h")}, false},
		{"a phony prerequisite (FORCE)", []string{filepath.Join(dir, "FORCE")}, false},
		{"a missing prerequisite make remakes", []string{made}, true},
	}
	for _, tt := range tests {
		if got := p.outdated(target, tt.prereqs, o); got != tt.want {
			t.Errorf("%s: outdated = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !p.outdated(filepath.Join(dir, "missing.o"), nil, o) {
		t.Error("a missing target is not outdated")
	}
}

// modpost's srcversion hashes the files in an object's directory that its
// record names, in order: the old record may stand in for the new one only
// when the compiler's new dependency list names the same ones.
func TestSameLocalDeps(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	dep := filepath.Join(dir, ".x.o.d")
	o := &Object{key: dir + "/x.o", Target: dir + "/x.o", Source: dir + "/x.c",
		Deps: []string{dir + "/a.h", other + "/k.h", dir + "/b.h", "/k/include/config/FOO"}}
	s := &step{r: &recipe{target: o.Target}, o: o, late: []makelog.Line{{}}, depfiles: []string{dep}}
	// A link's record (no source, no dependency list) waits too: modpost
	// hashes no file for it.
	link := &Object{key: dir + "/m.o", Target: dir + "/m.o"}
	linked := &step{r: &recipe{target: link.Target}, o: link, late: []makelog.Line{{}}}
	p := &Replay{late: []lateRecord{{o: o}, {o: link}}, ran: []*step{s, linked}}
	tests := []struct {
		name, deps string // D/ is the object's dir, K/ another
		want       bool
	}{
		{"same", "D/x.c D/a.h \\\n K/k.h D/b.h", true},
		{"a kernel header more", "D/x.c D/a.h K/k.h K/l.h D/b.h", true},
		{"a local header more", "D/x.c D/a.h D/c.h K/k.h D/b.h", false},
		{"local headers reordered", "D/x.c D/b.h K/k.h D/a.h", false},
		{"a local header less", "D/x.c D/a.h K/k.h", false},
		{"an escaped space", "D/x.c D/a\\ c.h K/k.h D/b.h", false},
		{"a path not in its plain form", "D/x.c D/../" + filepath.Base(dir) + "/a.h K/k.h D/b.h", false},
		{"a path relative to the kernel tree", "D/x.c D/a.h include/k.h K/k.h D/b.h", true},
		{"more rules after the first (rustc)", "D/x.c D/a.h K/k.h D/b.h\n\nD/x.d: D/x.c D/c.h\nD/c.h:", true},
	}
	for _, tt := range tests {
		deps := strings.NewReplacer("D/", dir+"/", "K/", other+"/").Replace(tt.deps)
		if err := os.WriteFile(dep, []byte(o.Target+": "+deps+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := p.sameLocalDeps(); got != tt.want {
			t.Errorf("%s: sameLocalDeps = %v, want %v", tt.name, got, tt.want)
		}
	}
	os.Remove(dep)
	if p.sameLocalDeps() {
		t.Error("no dependency file: sameLocalDeps = true, want false")
	}
	if p.late = nil; !p.sameLocalDeps() {
		t.Error("a record written already: sameLocalDeps = false, want true")
	}
}

package replay

import (
	"slices"
	"strings"
	"sync"

	"kwatch/makelog"
)

// Recording is what the full makes ran for a module's targets (package
// makelog), learned across builds: a make that finds a target up to date
// runs nothing for it, so each target keeps the lines of the last make that
// did run it.
type Recording struct {
	Dir     string             // the module directory
	recipes map[string]*recipe // by absolute target
	phases  []string           // the sub-makes that ran the module's targets, in order
	order   []string           // targets, in the order make first ran them
	top     []makelog.Line     // the lines of the make that ran those sub-makes

	mu sync.Mutex
	// how often replays saw a line change no file of the module dir (see
	// Replay.do);
	// a full make starts them afresh: what it changed (a kernel tree that
	// now has a vmlinux for BTF) may make such a line write
	checks map[string]int
}

// recipe is what make ran for one target in the module directory.
type recipe struct {
	target  string
	prereqs []string // absolute: $^ and $| as make named them
	lines   []makelog.Line
	phase   string // the line that started the sub-make that ran them ("" for the first make)
}

// Learn returns what rec knew, updated with a full make's log. Lines of
// $(shell ...) calls, lines that run a make of their own and lines that do
// nothing are dropped; what remains is, per target of the module
// directory, what make ran to remake it.
func Learn(rec *Recording, dir string, lines []makelog.Line) *Recording {
	recursive := makelog.Recursive(lines)
	byPID := map[int]makelog.Line{}
	for _, l := range lines {
		byPID[l.PID] = l
	}
	phaseOf := func(l makelog.Line) (makelog.Line, bool) {
		for _, pid := range []int{l.Make, l.MakeOwner} {
			if p, ok := byPID[pid]; ok && recursive[pid] {
				return p, true
			}
		}
		return makelog.Line{}, false
	}
	next := &Recording{Dir: dir, recipes: map[string]*recipe{}}
	topMake := 0
	for _, l := range lines {
		target := resolve(l.Dir, l.Target)
		if l.Shell || recursive[l.PID] || l.Target == "" || !strings.HasPrefix(target, dir+"/") || noop(l.Text) {
			continue
		}
		r := next.recipes[target]
		if r == nil {
			r = &recipe{target: target}
			if p, ok := phaseOf(l); ok {
				r.phase = p.Text
				if topMake == 0 {
					topMake = p.Make
				}
				if !slices.Contains(next.phases, p.Text) {
					next.phases = append(next.phases, p.Text)
				}
			}
			for _, p := range l.Prereqs {
				r.prereqs = append(r.prereqs, resolve(l.Dir, p))
			}
			next.recipes[target] = r
			next.order = append(next.order, target)
		}
		r.lines = append(r.lines, l)
	}
	for _, l := range lines {
		if topMake != 0 && l.Make == topMake && !l.Shell && !noop(l.Text) {
			next.top = append(next.top, l)
		}
	}
	if rec == nil {
		return next
	}
	if len(next.recipes) == 0 {
		next.phases, next.order, next.top, next.recipes = rec.phases, rec.order, rec.top, rec.recipes
		return next
	}
	// What this make did not run stays known if this make still builds it
	// (a line of it names it).
	named := map[string]bool{}
	for _, r := range next.recipes {
		for _, p := range r.prereqs {
			named[p] = true
		}
	}
	for _, t := range rec.order {
		if old := rec.recipes[t]; next.recipes[t] == nil && named[t] {
			next.recipes[t] = old
		}
	}
	has := func(t string) bool { return next.recipes[t] != nil }
	next.order = merge(next.order, rec.order, has)
	next.phases = merge(next.phases, rec.phases, func(p string) bool {
		for _, r := range next.recipes {
			if r.phase == p {
				return true
			}
		}
		return false
	})
	return next
}

// merge is newer, with each item of older that newer lacks (and keep
// wants) placed after the one it followed in older.
func merge(newer, older []string, keep func(string) bool) []string {
	out := slices.Clone(newer)
	for i, t := range older {
		if slices.Contains(out, t) || !keep(t) {
			continue
		}
		at := 0
		if i > 0 {
			at = slices.Index(out, older[i-1]) + 1
		}
		out = slices.Insert(out, at, t)
	}
	return out
}

// check reports whether replays saw the line change no file of the module
// dir twice: once may be a line that writes only when something changed.
func (rec *Recording) check(l makelog.Line) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.checks[l.Text] >= 2
}

func (rec *Recording) setCheck(l makelog.Line) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.checks == nil {
		rec.checks = map[string]int{}
	}
	rec.checks[l.Text]++
}

// unsetCheck forgets that replays saw the line write nothing: it wrote.
func (rec *Recording) unsetCheck(l makelog.Line) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	delete(rec.checks, l.Text)
}

// byPhase returns the targets to consider, phase by phase, each phase in
// the order make ran them.
func (rec *Recording) byPhase() [][]*recipe {
	out := make([][]*recipe, len(rec.phases)+1)
	for _, t := range rec.order {
		r := rec.recipes[t]
		i := slices.Index(rec.phases, r.phase) + 1 // "" (the first make): 0
		out[i] = append(out[i], r)
	}
	return out
}

// workdir returns the directory the target's lines ran in, else that of
// the module's first target ("" if none ran): the directory its record's
// relative paths start from.
func (rec *Recording) workdir(target string) string {
	if r := rec.recipes[target]; r != nil {
		return r.lines[0].Dir
	}
	for _, t := range rec.order {
		return rec.recipes[t].lines[0].Dir
	}
	return ""
}

// topDir is the dir of the make that ran the module's sub-makes: the
// kernel's build dir (make -C).
func (rec *Recording) topDir() string {
	if len(rec.top) == 0 {
		return ""
	}
	return rec.top[0].Dir
}

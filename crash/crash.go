// Package crash finds kernel crash reports (oopses, BUGs, WARNINGs, panics)
// in a guest's console or /dev/kmsg lines, and explains failed module loads.
// It is plain text processing: no I/O, no dependencies.
package crash

import (
	"regexp"
	"strings"

	"kwatch/kmod"
)

// Severity says how badly a report hurt the guest.
type Severity int

const (
	None    Severity = iota
	Warning          // WARN_ON, lockdep, hung task, RCU stall: guest OK (taint W), keep reloading
	Oops             // BUG/Oops/GPF/page fault/invalid opcode/Rust panic/KASAN/UBSAN/soft lockup: guest tainted D, module likely stuck
	Fatal            // Kernel panic / double fault / hard lockup: the guest is dead or about to be
)

func (s Severity) String() string {
	switch s {
	case Warning:
		return "warning"
	case Oops:
		return "oops"
	case Fatal:
		return "panic"
	}
	return "none"
}

// Report is one crash report: the kernel's block of lines and what it says.
type Report struct {
	Severity Severity
	Title    string   // the header line from its header on, e.g. "BUG: kernel NULL pointer dereference, address: 0000000000000000"
	Lines    []string // the block, prefixes stripped, at most about maxLines lines
	// Module is the module the report points at: the one named as "[name]" on
	// the RIP:/WARNING: line or on the first reliable frame of the trace, else
	// the first one in "Modules linked in:" (the most recently loaded), else
	// the last unloaded one. "" if none.
	Module   string
	Function string // e.g. "kwcrash_init+0x15/0x30" from the RIP:/WARNING: line or that frame, "" if unknown
	// Return is true when Function comes from a call trace frame: a return
	// address, whose call is the instruction before it.
	Return bool
}

// InModule reports whether the crash happened in module name: the RIP:/WARNING:
// line names [name], or (for a crash in a kernel helper such as
// refcount_warn_saturate or a Rust panic) the first reliable frame of the trace
// does, or, when the report has no symbols at all, name is the module whose
// init was running ("name(+)" in "Modules linked in:"). Unlike Module it never
// guesses from the list of loaded modules. Hyphens and underscores are the
// same, as for the kernel.
func (r Report) InModule(name string) bool {
	m, _, _ := locate(r.Lines)
	return m != "" && kmod.Name(m) == kmod.Name(name)
}

// sym is a symbolised address as %pS prints it: "kwcrash_init+0x15/0x30 [kwcrash]",
// with an optional build ID after the module name.
const sym = `([^\s\[\]:]+\+0x[0-9a-f]+/0x[0-9a-f]+)(?: \[([^\s\]]+)(?: [0-9a-f]+)?\])?`

var (
	symRe   = regexp.MustCompile(sym)
	frameRe = regexp.MustCompile(`^\s*` + sym + `\s*$`) // a reliable frame; "? " ones are guesses
	warnAt  = regexp.MustCompile(`^WARNING: .* at `)
	// "Modules linked in: kwcrash(OE+) kwwarn(OE) [last unloaded: kwtimer(OE)]"
	moduleRe   = regexp.MustCompile(`^([^\s(\[]+)(?:\(([A-Z+-]*)\))?$`)
	unloadedRe = regexp.MustCompile(`\[last unloaded: ([^\s(\]]+)`)
)

// locate finds where a report says the crash happened; ret is true when
// function is a call trace frame's return address.
func locate(lines []string) (module, function string, ret bool) {
	for _, l := range lines {
		if strings.HasPrefix(l, "RIP: ") || warnAt.MatchString(l) {
			if m := symRe.FindStringSubmatch(l); m != nil {
				function, module = m[1], m[2]
			}
			break
		}
	}
	if module != "" {
		return module, function, false
	}
	// A crash in a kernel helper the module called: blame the caller.
	for _, l := range lines {
		if m := frameRe.FindStringSubmatch(l); m != nil && m[2] != "" {
			return m[2], m[1], true
		}
	}
	if function == "" {
		// No symbols at all (no KALLSYMS, or a jump to a bad address): the
		// module being initialised is the best witness.
		for _, m := range linkedModules(lines) {
			if strings.Contains(m.flags, "+") {
				return m.name, "", false
			}
		}
	}
	return "", function, false
}

type linkedModule struct{ name, flags string }

// linkedModules parses the "Modules linked in:" line, most recently loaded first.
func linkedModules(lines []string) []linkedModule {
	var mods []linkedModule
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, "Modules linked in:")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			m := moduleRe.FindStringSubmatch(f)
			if m == nil {
				break // "[last unloaded: ...]" ends the list
			}
			mods = append(mods, linkedModule{m[1], m[2]})
		}
		break
	}
	return mods
}

// anyModule is the display fallback for Report.Module.
func anyModule(lines []string) string {
	if mods := linkedModules(lines); len(mods) > 0 {
		return mods[0].name
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "Modules linked in:") {
			if m := unloadedRe.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		}
	}
	return ""
}

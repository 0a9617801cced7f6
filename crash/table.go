package crash

import (
	"regexp"
	"strings"
)

// pattern is one kind of report header: a line containing header, and
// matching none of suppress, starts or joins a report of that severity.
type pattern struct {
	header   string
	severity Severity
	suppress []*regexp.Regexp
}

func res(exprs ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(exprs))
	for i, e := range exprs {
		out[i] = regexp.MustCompile(e)
	}
	return out
}

// patterns is tried in order and the first match wins, so a specific header
// comes before the generic one it refines ("BUG: memory leak" before "BUG:").
// Sources: the kernel's printk formats, syzkaller's pkg/report/linux.go and
// KernelCI's logspec, as collected in shared/docs/anchors-kernel-loop.md §10.
// Header matching is case-sensitive.
var patterns = []pattern{
	// The guest is dead or about to be.
	{header: "Kernel panic - not syncing", severity: Fatal},
	{header: "---[ end Kernel panic", severity: Fatal},
	{header: "PANIC: double fault", severity: Fatal},
	{header: "Watchdog detected hard LOCKUP", severity: Fatal},

	// Printed as "BUG:" but the task carries on (taint W or none): lockdep,
	// kmemleak and might_sleep reports.
	{header: "BUG: memory leak", severity: Warning},
	{header: "BUG: sleeping function called from invalid context", severity: Warning},
	{header: "BUG: Invalid wait context", severity: Warning},
	{header: "BUG: held lock freed!", severity: Warning},
	{header: "BUG: bad unlock balance detected!", severity: Warning},
	{header: "still has locks held!", severity: Warning},
	{header: "BUG: lock held when returning to user space", severity: Warning},

	// Oopses and BUGs. "BUG:" covers page faults and NULL dereferences, KASAN,
	// KFENCE, KCSAN, KMSAN, soft lockups, spinlock and workqueue lockups, bad
	// page state, scheduling while atomic and stack guard pages; "DEBUG:" only
	// contains it (ODEBUG:, Boot_DEBUG:).
	{header: "BUG:", severity: Oops, suppress: res(`DEBUG:`)},
	{header: "kernel BUG at ", severity: Oops},
	{header: "Kernel BUG ", severity: Oops},
	{header: "BUG kmalloc-", severity: Oops}, // SLUB debugging
	{header: "Oops: ", severity: Oops},
	{header: "invalid opcode: ", severity: Oops},
	// "traps: prog[1] general protection fault ip:... error:0 in prog[...]" is a user-space crash.
	{header: "general protection fault", severity: Oops, suppress: res(`general protection fault .* error:\d+ in `)},
	{header: "stack segment: ", severity: Oops},
	{header: "divide error: ", severity: Oops},
	{header: "divide_error: ", severity: Oops},
	{header: "int3: ", severity: Oops},
	{header: "Unable to handle kernel ", severity: Oops}, // arm64
	{header: "Internal error:", severity: Oops},          // arm
	{header: "Unhandled fault:", severity: Oops},
	{header: "Alignment trap:", severity: Oops},
	{header: "rust_kernel: panicked", severity: Oops},
	{header: "UBSAN: ", severity: Oops},
	{header: "VFS: Busy inodes after unmount", severity: Oops},
	{header: "VFS: Close: file count is 0", severity: Oops},
	{header: "unregister_netdevice: waiting for ", severity: Oops},

	// The guest is fine. "WARNING:" covers WARN_ON and lockdep, "INFO:" hung
	// tasks, RCU stalls and older lockdep reports.
	{header: "WARNING:", severity: Warning, suppress: res(
		`WARNING: /etc/ssh/moduli does not exist`, // sshd on the console
		`WARNING: workqueue cpumask: online intersect > possible intersect`,
		`WARNING: [Tt]he mand mount option`,
		`WARNING: Unsupported flag value\(s\) of 0x[0-9a-f]+ in DT_FLAGS_1`,
		`WARNING: Unprivileged eBPF is enabled with eIBRS`,
		`WARNING: fbcon: Driver '.*' missed to adjust virtual screen size`,
		`WARNING: See https.* for mitigation options\.`,
		`WARNING: kernel not compiled with CPU_SRSO`,
		`^EXT4-fs `,
		`^XFS \(.*\): WARNING`,
	)},
	{header: "INFO:", severity: Warning, suppress: res(
		`INFO: lockdep is turned off`,
		`INFO: Stall ended before state dump start`,
		`INFO: NMI handler`,
		`(handler|interrupt).*took too long`,
		`INFO: recovery required on readonly filesystem`,
		`_INFO:`,
	)},
	{header: "refcount_t: ", severity: Warning},
	{header: "list_add corruption", severity: Warning}, // a BUG instead with CONFIG_BUG_ON_DATA_CORRUPTION
	{header: "list_add double add", severity: Warning},
	{header: "list_del corruption", severity: Warning},
}

// ignored lines are never headers, whatever module name they start with.
var ignored = []string{
	"loading out-of-tree module taints kernel",
	"module verification failed: ",
}

// classify returns the severity of a cleaned line and its text from the
// header on, or None.
func classify(text string) (Severity, string) {
	for _, s := range ignored {
		if strings.Contains(text, s) {
			return None, ""
		}
	}
next:
	for _, p := range patterns {
		i := strings.Index(text, p.header)
		if i < 0 {
			continue
		}
		for _, re := range p.suppress {
			if re.MatchString(text) {
				continue next
			}
		}
		return p.severity, strings.TrimSpace(text[i:])
	}
	return None, ""
}

// Classify is the per-line table lookup, exposed for tests and callers that
// only need a verdict. It accepts raw console or /dev/kmsg lines.
func Classify(line string) Severity {
	s, _ := classify(clean(line).text)
	return s
}

var (
	// The console prefix: "[   12.345678] ", with the log level a raw read
	// shows and the CONFIG_PRINTK_CALLER tag. It is searched for anywhere,
	// because shell output ("~ # ") often sits in front of it.
	stampRe = regexp.MustCompile(`(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*[CT]\d+\])?(?:\s|$)`)
	kmsgRe  = regexp.MustCompile(`^\d+,\d+,\d+,[^;]*;`) // a raw /dev/kmsg record header
)

// cleaned is a log line without its prefix and carriage returns.
type cleaned struct {
	text   string
	marked bool // the line carried a kernel prefix
	first  bool // ... at its very start
}

func clean(line string) cleaned {
	line = strings.ReplaceAll(line, "\r", "")
	if loc := kmsgRe.FindStringIndex(line); loc != nil {
		return cleaned{text: line[loc[1]:], marked: true, first: true}
	}
	if loc := stampRe.FindStringIndex(line); loc != nil {
		return cleaned{text: line[loc[1]:], marked: true, first: loc[0] == 0}
	}
	return cleaned{text: line}
}

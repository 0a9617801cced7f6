package crash

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	hintRebuild = "rebuild the module against the guest kernel's build tree, not the host's"
	hintParams  = "fix the module parameters (modinfo -p lists them)"
	hintSigned  = "boot the guest with module.sig_enforce=0, or sign the module with the guest kernel's key"
)

// kernelCauses are the kernel messages that explain a failed load
// (kernel/module/*.c, kernel/params.c), most specific first: a symbol whose
// version disagrees is also reported as unknown. explain gets, per group, the
// distinct values found, joined by ", ".
var kernelCauses = []struct {
	re      *regexp.Regexp
	explain func(g []string) (cause, hint string)
}{
	{regexp.MustCompile(`version magic '(.*)' should be '(.*)'`), func(g []string) (string, string) {
		return fmt.Sprintf("version magic mismatch: the module is for %q, the guest kernel is %q",
			strings.TrimSpace(g[0]), strings.TrimSpace(g[1])), hintRebuild
	}},
	{regexp.MustCompile(`disagrees about version of symbol (\S+)`), func(g []string) (string, string) {
		return "the module disagrees about the version of " + g[0] + " (it was built against another build of this kernel)", hintRebuild
	}},
	{regexp.MustCompile(`uses symbol \((\S+)\) from namespace (\S+), but does not import it`), func(g []string) (string, string) {
		return "the module uses " + g[0] + " from namespace " + g[1] + " without importing it", "add MODULE_IMPORT_NS(" + g[1] + ") to the module"
	}},
	{regexp.MustCompile(`Unknown symbol (\S+)`), func(g []string) (string, string) {
		return "unknown symbol " + g[0], `load the module that exports it first; GPL-only symbols also need MODULE_LICENSE("GPL")`
	}},
	{regexp.MustCompile(`Loading of (unsigned module|module with unavailable key) is rejected`), func(g []string) (string, string) {
		return "the guest kernel only loads signed modules and rejected this " + strings.TrimPrefix(g[0], "module "), hintSigned
	}},
	{regexp.MustCompile(`Lockdown: .*: unsigned module loading is restricted`), func([]string) (string, string) {
		return "kernel lockdown forbids loading unsigned modules", "boot the guest with lockdown=none and without Secure Boot, or sign the module"
	}},
	{regexp.MustCompile("`(.*)' invalid for parameter `(.*)'"), func(g []string) (string, string) {
		return fmt.Sprintf("invalid value %q for parameter %s", g[0], g[1]), hintParams
	}},
	{regexp.MustCompile("[Uu]nknown parameter `(.*)'"), func(g []string) (string, string) {
		return "unknown parameter " + g[0], hintParams
	}},
}

// distinctGroups collects what re captures in lines: per group, the distinct
// values joined by ", ". nil if re matches no line.
func distinctGroups(re *regexp.Regexp, lines []string) []string {
	var vals [][]string
	found := false
	for _, l := range lines {
		m := re.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		found = true
		if vals == nil {
			vals = make([][]string, len(m)-1)
		}
		for i, v := range m[1:] {
			if !slices.Contains(vals[i], v) {
				vals[i] = append(vals[i], v)
			}
		}
	}
	if !found {
		return nil
	}
	g := make([]string, len(vals))
	for i, v := range vals {
		g[i] = strings.Join(v, ", ")
	}
	return g
}

// errnos are the errors a module's init commonly returns, with glibc's
// strerror text (what busybox and kmod print) and the kernel-internal ones
// that print as "Unknown error N".
var errnos = []struct {
	name string
	num  int
	text string
}{
	{"EPERM", 1, "Operation not permitted"},
	{"ENOENT", 2, "No such file or directory"},
	{"ESRCH", 3, "No such process"},
	{"EINTR", 4, "Interrupted system call"},
	{"EIO", 5, "Input/output error"},
	{"ENXIO", 6, "No such device or address"},
	{"E2BIG", 7, "Argument list too long"},
	{"EBADF", 9, "Bad file descriptor"},
	{"EAGAIN", 11, "Resource temporarily unavailable"},
	{"ENOMEM", 12, "Cannot allocate memory"},
	{"EACCES", 13, "Permission denied"},
	{"EFAULT", 14, "Bad address"},
	{"EBUSY", 16, "Device or resource busy"},
	{"ENODEV", 19, "No such device"},
	{"ENFILE", 23, "Too many open files in system"},
	{"ENOSPC", 28, "No space left on device"},
	{"ERANGE", 34, "Numerical result out of range"},
	{"ENOSYS", 38, "Function not implemented"},
	{"ENODATA", 61, "No data available"},
	{"EPROTO", 71, "Protocol error"},
	{"EOVERFLOW", 75, "Value too large for defined data type"},
	{"EOPNOTSUPP", 95, "Operation not supported"},
	{"EADDRINUSE", 98, "Address already in use"},
	{"ETIMEDOUT", 110, "Connection timed out"},
	{"EALREADY", 114, "Operation already in progress"},
	{"ECANCELED", 125, "Operation canceled"},
	{"ERESTARTSYS", 512, ""},
	{"EPROBE_DEFER", 517, ""},
	{"ENOTSUPP", 524, ""},
}

var (
	// "insmod: can't insert 'x.ko': ..." (busybox), "insmod: ERROR: could not
	// insert module x.ko: ..." (kmod), "rmmod: can't unload module 'x': ...".
	toolRe       = regexp.MustCompile(`^(?:\S*/)?(insmod|rmmod|modprobe):\s*(.*)$`)
	moduleNameRe = regexp.MustCompile(`(?:module|Module|remove) '?([\w-]+)'?`)
	inUseRe      = regexp.MustCompile(`Module ([\w-]+) is in use(?: by: (.*))?`)
	unknownErrRe = regexp.MustCompile(`^Unknown error (\d+)$`)
)

// LoadError turns insmod/rmmod output plus the kernel log lines around the
// load into a one-line cause and a hint (hint may be ""). Kernel messages are
// more precise than the tools' errno text, so they win. "loading out-of-tree
// module taints kernel." and "module verification failed" are informational,
// never causes.
func LoadError(output string, kernelLines []string) (cause, hint string) {
	texts := make([]string, len(kernelLines))
	for i, l := range kernelLines {
		texts[i] = clean(l).text
	}
	for _, k := range kernelCauses {
		if g := distinctGroups(k.re, texts); g != nil {
			return k.explain(g)
		}
	}

	var failures []string
	last := ""
	// A carriage return ends a line as a newline does: a progress line a
	// tool rewrote in place is two lines, and a cause stays one line.
	lines := strings.FieldsFunc(output, func(r rune) bool { return r == '\n' || r == '\r' })
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		last = l
		switch {
		case l == "Killed" || l == "Segmentation fault":
			return "insmod died: the module's init crashed the kernel", "see the crash report; the module stays stuck until the VM restarts"
		case toolRe.MatchString(l):
			failures = append(failures, l)
		}
	}
	// "not loaded" from the rmmod before an insmod is expected; report it only
	// when nothing else failed.
	var benign string
	for _, f := range failures {
		c, h, ok := explainTool(f)
		if !ok {
			if benign == "" {
				benign = c
			}
			continue
		}
		return c, h
	}
	switch {
	case benign != "":
		return benign, ""
	case last != "":
		return last, ""
	}
	return "failed without an error message", ""
}

// explainTool explains one insmod/rmmod/modprobe error line; ok is false when
// the line only says the module was not loaded.
func explainTool(line string) (cause, hint string, ok bool) {
	m := toolRe.FindStringSubmatch(line)
	tool, msg := m[1], m[2]
	errText := msg
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		errText = msg[i+2:]
	}
	lower := strings.ToLower(msg)
	name := "the module"
	if n := moduleNameRe.FindStringSubmatch(msg); n != nil {
		name = "module " + n[1]
	}
	unloading := tool == "rmmod" || strings.Contains(lower, "remove") || strings.Contains(lower, "unload")

	const inUseHint = "unload the modules that use it first (lsmod lists them) or stop the programs holding it; if its init or exit crashed, restart the VM"
	if u := inUseRe.FindStringSubmatch(msg); u != nil {
		cause = "module " + u[1] + " is in use"
		if u[2] != "" {
			cause += " by " + strings.TrimSpace(u[2])
		}
		return cause, inUseHint, true
	}
	if unloading {
		switch {
		case strings.Contains(lower, "not currently loaded") || errText == "No such file or directory":
			return name + " is not loaded", "", false
		case errText == "Resource temporarily unavailable":
			return name + " is in use", inUseHint, true
		case errText == "Device or resource busy":
			return name + " cannot be unloaded: its init crashed or is still running, or it has no module_exit",
				"restart the VM if its init crashed or hangs; otherwise give the module a module_exit function", true
		}
		return "rmmod failed: " + errText, "", true
	}

	switch {
	case strings.Contains(lower, "invalid module format"):
		return "invalid module format", hintRebuild + "; the guest's kernel log says more", true
	case strings.Contains(lower, "unknown symbol in module"):
		return "unknown symbol or parameter, or the module's init returned -ENOENT", `look for "Unknown symbol" in the guest's kernel log`, true
	case strings.Contains(lower, "file exists") || strings.Contains(lower, "already in kernel") || strings.Contains(lower, "already loaded"):
		return "the module is already loaded", "rmmod it first; if it was not loaded, its init returned -EEXIST", true
	case strings.Contains(lower, "invalid parameters") || strings.Contains(lower, "invalid module parameters") || errText == "Invalid argument":
		return "invalid module parameters, or the module's init returned -EINVAL", "check the parameters (modinfo -p lists them) and module_init's error paths", true
	case strings.Contains(lower, "key was rejected by service") || strings.Contains(lower, "required key not available"):
		return "the guest kernel only loads signed modules and rejected this one", hintSigned, true
	}
	if e := errnoName(errText); e != "" {
		return fmt.Sprintf("the module's init failed with -%s (%s)", e, errText),
			"module_init returned an error; the module's own messages in the kernel log may say why", true
	}
	return line, "", true
}

// errnoName maps strerror text (or "Unknown error N") to the errno's name.
func errnoName(text string) string {
	num := 0
	if m := unknownErrRe.FindStringSubmatch(text); m != nil {
		num, _ = strconv.Atoi(m[1])
	}
	for _, e := range errnos {
		if (num != 0 && e.num == num) || (e.text != "" && strings.EqualFold(e.text, text)) {
			return e.name
		}
	}
	return ""
}

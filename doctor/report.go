package doctor

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

// WriteText writes the report for a terminal: the tools, a table of the
// kernels and what each can do, then each kernel's parts and every gap with
// its fix.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("tools\n")
	nameW, whatW := 0, 0
	for _, c := range r.Tools {
		nameW = max(nameW, width(c.Name))
		whatW = max(whatW, min(width(c.what()), 44))
	}
	for _, c := range r.Tools {
		fmt.Fprintf(&b, "  %s %s  %s  %s\n", mark(c.OK), pad(c.Name, nameW), pad(c.what(), whatW), c.Enables)
		if c.Fix != "" {
			fmt.Fprintf(&b, "    %s  fix: %s\n", pad("", nameW), c.Fix)
		}
	}

	if len(r.Kernels) == 0 {
		b.WriteString("\nkernels: none found in /boot (apt-get install linux-image-amd64 linux-headers-amd64, or pass --kernel and --kdir)\n")
	} else {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		row := []string{"kernels"}
		for _, p := range probes {
			row = append(row, p.name)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
		for _, k := range r.Kernels {
			row = []string{"  " + k.Release}
			if k.Default {
				row[0] += " (default)"
			}
			for _, c := range k.Checks {
				row = append(row, mark(c.OK))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
		b.WriteString("  (boot: under --vm qemu; c, rust: build modules; kunit: run KUnit suites; btf: in modules; gdb: kernel symbols)\n")
	}

	for _, k := range r.Kernels {
		fmt.Fprintf(&b, "\n%s\n", k.Release)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, part := range []struct{ name, val string }{
			{"image", k.Image}, {"build tree", k.Build}, {"config", k.Config}, {"modules", k.Modules}, {"NIC", k.NIC.String()},
		} {
			if part.val == "" {
				part.val = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\n", part.name, part.val)
		}
		tw.Flush()
		tw = tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
		for _, c := range k.Checks {
			fmt.Fprintf(tw, "  %s %s\t%s\n", mark(c.OK), c.Name, c.what())
			if c.Fix != "" {
				fmt.Fprintf(tw, "  \t  fix: %s\n", c.Fix)
			}
		}
		tw.Flush()
	}

	b.WriteString("\n")
	switch {
	case r.Default == "":
		b.WriteString("`kwatch DIR` would not work: no kernel image to boot (pass --kernel, or install linux-image-amd64)\n")
	case r.DefaultWorks:
		for _, k := range r.Kernels {
			if k.Default {
				fmt.Fprintf(&b, "`kwatch DIR` works here: it boots %s under --vm qemu and builds against %s\n", k.Image, k.Build)
			}
		}
	default:
		fmt.Fprintf(&b, "`kwatch DIR` would not work yet: see the fixes above (its default kernel is %s)\n", r.Default)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// what is what a check found: the detail, or the problem.
func (c Check) what() string {
	if c.OK {
		return c.Detail
	}
	return c.Problem
}

func width(s string) int { return utf8.RuneCountInString(s) }

func pad(s string, w int) string {
	if n := width(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

package nix

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"

	"kwatch/proc"
)

// Plan is what `nix build --dry-run` says a build needs: store paths of
// derivations to build locally and of outputs to fetch from a binary cache.
type Plan struct {
	Build, Fetch []string
}

// DryRun asks nix what building installable would take, without building.
func (s Settings) DryRun(ctx context.Context, installable string) (Plan, error) {
	cmd := s.command("build", installable, "--dry-run")
	var out bytes.Buffer
	tail := &tailWriter{w: &out}
	cmd.Stdout, cmd.Stderr = tail, tail
	if err := proc.Run(ctx, cmd); err != nil {
		return Plan{}, nixError(ctx, "nix build --dry-run "+installable, err, tail)
	}
	return parsePlan(out.String()), nil
}

// parsePlan reads the lists nix prints for --dry-run: a heading such as
// "these 2 derivations will be built:" or "this path will be fetched
// (1.2 MiB download, 5 MiB unpacked):", then one indented store path a line.
func parsePlan(out string) Plan {
	var p Plan
	var list *[]string
	for _, l := range strings.Split(ansi.ReplaceAllString(out, ""), "\n") {
		switch t := strings.TrimSpace(l); {
		case strings.Contains(t, " will be built"):
			list = &p.Build
		case strings.Contains(t, " will be fetched"):
			list = &p.Fetch
		case list != nil && strings.HasPrefix(t, "/") && l != t:
			*list = append(*list, t)
		default:
			list = nil
		}
	}
	return p
}

// kernelName matches the store path of a kernel, such as
// /nix/store/<hash>-linux-6.18.5.drv or …-linux-6.18.5-modules, but not
// linux-headers or linux-config.
var kernelName = regexp.MustCompile(`^/nix/store/[0-9a-z]{32}-(linux-[0-9]+\.[0-9]+(\.[0-9]+)?(-rc[0-9]+)?)(-[a-z]+)?(\.drv)?$`)

// Kernel says where the kernel in the plan comes from: one line, or "" when
// the plan has no kernel in it (it is in the store already, or nix cannot tell).
func (p Plan) Kernel() string {
	for _, path := range p.Build {
		if m := kernelName.FindStringSubmatch(path); m != nil {
			return fmt.Sprintf("the VM's kernel %s is not in the binary cache: nix compiles it here, which can take hours", m[1])
		}
	}
	for _, path := range p.Fetch {
		if m := kernelName.FindStringSubmatch(path); m != nil {
			return fmt.Sprintf("the VM's kernel %s comes from the binary cache (%d paths to download, %d to build)", m[1], len(p.Fetch), len(p.Build))
		}
	}
	return ""
}

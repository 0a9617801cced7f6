package nix

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path"
	"strings"

	"kwatch/buildfiles"
	"kwatch/proc"
)

// untrackedInputs lists the build inputs under dir (relative to it) that git
// neither tracks nor ignores. A flake in a git repository is copied from
// git's index, so nix would build without them. Outside git it returns nil.
func untrackedInputs(ctx context.Context, dir string) ([]string, error) {
	if in, err := InGit(ctx, dir); !in || err != nil {
		return nil, err // outside git nix copies the whole directory
	}
	cmd := exec.Command("git", "-C", dir, "ls-files", "--others", "--exclude-standard", "-z")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := proc.Run(ctx, cmd); err != nil {
		return nil, fmt.Errorf("listing the files git does not track in %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	var inputs []string
	for _, p := range strings.Split(stdout.String(), "\x00") {
		if p != "" && buildInput(p) {
			inputs = append(inputs, p)
		}
	}
	return inputs, nil
}

// InGit reports whether dir lies in a git work tree. Only then does nix copy
// just the tracked files of a flake into the (world-readable) store: outside
// git it copies the whole directory. The error is ctx's only.
func InGit(ctx context.Context, dir string) (bool, error) {
	if err := proc.Run(ctx, exec.Command("git", "-C", dir, "rev-parse", "--show-toplevel")); err != nil {
		return false, ctx.Err() // not in a work tree, or no git
	}
	return true, nil
}

// buildInput reports whether a path (slash-separated) is a file a module's
// flake build reads; nothing in a hidden directory is.
func buildInput(p string) bool {
	dir, name := path.Split(p)
	return !strings.HasPrefix(dir, ".") && !strings.Contains(dir, "/.") && buildfiles.IsInput(name)
}

// untrackedError says which files nix cannot see and how to fix it.
func untrackedError(files []string) error {
	list := strings.Join(files, ", ")
	verb, pronoun := "is", "it"
	if len(files) > 1 {
		verb, pronoun = "are", "them"
	}
	return fmt.Errorf("%s %s not tracked by git, so nix cannot see %s: git add -N %s",
		list, verb, pronoun, strings.Join(files, " "))
}

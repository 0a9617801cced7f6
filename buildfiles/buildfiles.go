// Package buildfiles says which files of a kernel module's tree are build
// inputs and which are build outputs: one definition for the watcher, the
// builder and the nix sync.
package buildfiles

import (
	"path"
	"strings"
)

var (
	kbuildNames    = map[string]bool{"Makefile": true, "makefile": true, "GNUmakefile": true, "Kbuild": true, "Kconfig": true}
	kbuildPrefixes = []string{"Makefile.", "Kbuild.", "Kconfig."}
	inputExts      = map[string]bool{".c": true, ".h": true, ".S": true, ".rs": true, ".nix": true}

	// Kbuild writes its outputs into the module directory (M=$PWD, no MO=
	// before Linux 6.13); nix installs modules compressed.
	outputNames    = map[string]bool{"modules.order": true, "Module.symvers": true, "rust-project.json": true}
	outputSuffixes = []string{".o", ".ko", ".ko.xz", ".ko.zst", ".ko.gz", ".mod", ".mod.c", ".rmeta", ".a", ".cmd"}

	// Editor temporaries: vim, emacs, JetBrains safe-write.
	editorTemps = []string{"4913", "*.swp", "*~", "#*#", ".#*", "*___jb_tmp___", "*___jb_old___"}
)

// IsInput reports whether a file name is a build input: C, assembly and Rust
// sources and headers, Kbuild files and Makefiles, Kconfig, and a flake's .nix
// files and flake.lock. Hidden files, build outputs (x.mod.c ends in .c) and
// editor temporaries (Makefile.swp starts with Makefile.) are not.
func IsInput(name string) bool {
	if strings.HasPrefix(name, ".") || IsOutput(name) || IsEditorTemp(name) {
		return false
	}
	return name == "flake.lock" || inputExts[path.Ext(name)] || isKbuildFile(name)
}

// IsKbuildFile reports whether a build input is a Makefile, Kbuild or
// Kconfig file: an edit of one can change what is built and how.
func IsKbuildFile(name string) bool {
	return IsInput(name) && isKbuildFile(name)
}

func isKbuildFile(name string) bool {
	if kbuildNames[name] {
		return true
	}
	for _, prefix := range kbuildPrefixes {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// IsOutput reports whether a file name is one Kbuild writes into a module's
// directory (or a packaged module).
func IsOutput(name string) bool {
	if outputNames[name] {
		return true
	}
	for _, suffix := range outputSuffixes {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// IsEditorTemp reports whether a file name is an editor's temporary file.
func IsEditorTemp(name string) bool {
	for _, pat := range editorTemps {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

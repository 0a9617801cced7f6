package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// project is the module every reload variant edits: a flake (so the nix
// builders can build it) whose src/ holds a small C module. Kbuild, the seed
// script and the floor build src/ directly.
type project struct {
	root, src, name string
	version         int // of the last source written
}

// moduleC is a module whose init logs "NAME: version V loaded": the line
// every variant waits for.
const moduleC = `#include <linux/module.h>
#include <linux/init.h>
static int __init m_init(void) { pr_info("%[1]s: version %[2]d loaded\n"); return 0; }
static void __exit m_exit(void) { }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
`

// flakeNix builds the module the way a nixpkgs module derivation does,
// without nixpkgs: make $makeFlags, then install the .ko under $out. Only the
// sources are copied (src/ also holds Kbuild's outputs from the other
// variants). The builder ends with a builtin: nix 2.8 without a sandbox
// reports a build whose last command was exec'd as killed by signal 9.
const flakeNix = `{
  outputs = { self }: {
    packages.x86_64-linux.module = derivation {
      name = "%[1]s-module";
      system = "x86_64-linux";
      builder = "/bin/bash";
      outputs = [ "out" ];
      # New per bench run, so that nix never reuses a build of an earlier run.
      run = "%[2]s";
      PATH = "/usr/bin:/bin";
      src = ./src;
      makeFlags = [ "KDIR=%[3]s" ];
      args = [ "-c" ''
        set -e
        cp $src/Kbuild $src/Makefile $src/*.c .
        make $makeFlags
        install -Dm444 %[1]s.ko -t $out/lib/modules/%[4]s/extra
        echo installed
      '' ];
    };
  };
}
`

const srcMakefile = `KDIR ?= /lib/modules/$(shell uname -r)/build

default:
	$(MAKE) -C $(KDIR) M=$$PWD modules
`

func newProject(root, name, kdir, release string) (*project, error) {
	p := &project{root: root, src: filepath.Join(root, "src"), name: name}
	files := map[string]string{
		"flake.nix":          fmt.Sprintf(flakeNix, name, strconv.FormatInt(time.Now().UnixNano(), 10), kdir, release),
		".gitignore":         "*.o\n*.ko\n*.mod\n*.mod.c\n.*.cmd\nModule.symvers\nmodules.order\n",
		"src/Kbuild":         "obj-m := " + name + ".o\n",
		"src/Makefile":       srcMakefile,
		"src/" + name + ".c": fmt.Sprintf(moduleC, name, 0),
	}
	for rel, content := range files {
		if err := writeFile(filepath.Join(root, rel), content); err != nil {
			return nil, err
		}
	}
	// A flake in a git repository gives nix only the tracked files: the
	// sources, not the other variants' build outputs in src/.
	git := exec.Command("sh", "-c", "git init -q && git add -A")
	git.Dir = root
	if out, err := git.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("creating the project's git repository: %v: %s", err, out)
	}
	return p, nil
}

// edit writes the next version of the module's source, like an editor
// saving it. It returns the init line that version logs and the save time,
// taken just before the write.
func (p *project) edit() (initLine string, saved time.Time, err error) {
	p.version++
	src := fmt.Sprintf(moduleC, p.name, p.version)
	saved = time.Now()
	if err := os.WriteFile(filepath.Join(p.src, p.name+".c"), []byte(src), 0o644); err != nil {
		return "", saved, fmt.Errorf("saving the module source: %w", err)
	}
	return p.initLine(), saved, nil
}

func (p *project) initLine() string { return fmt.Sprintf("%s: version %d loaded", p.name, p.version) }

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

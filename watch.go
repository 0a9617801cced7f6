package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"kwatch/event"
	"kwatch/loop"
	"kwatch/machine"
	"kwatch/watcher"
)

// watchUsage is `kwatch -h`: every subcommand, then the watch flags.
func watchUsage() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "usage: kwatch [flags] [DIR]\twatch DIR (the module source): build, load, stream the kernel log\n")
	for _, c := range subcommands() {
		for _, line := range strings.SplitAfter(strings.TrimSuffix(c.usage, "\n"), "\n") {
			fmt.Fprint(tw, "       "+strings.TrimSuffix(line, "\n")+"\n")
		}
	}
	fmt.Fprint(tw, "       kwatch --version\tkwatch's module version and VCS revision\n")
	tw.Flush()
	b.WriteString("When something does not work, run kwatch doctor first.\nflags of kwatch [DIR]:\n")
	return b.String()
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlagSet("kwatch")
	o.watchFlags(fs)
	pos, err := parseFlags(fs, args, stderr, watchUsage())
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, version())
		return nil
	}
	dir, err := dirArg(pos, "kwatch watches one module directory")
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return usagef("pass the directory holding the module's Makefile/Kbuild", "%s is not a directory", dir)
	}
	if o.debounce <= 0 {
		return usagef("use something like --debounce 75ms", "--debounce must be positive")
	}
	if o.runTimeout < 0 {
		return usagef("use something like --run-timeout 5m, or 0 for no limit", "--run-timeout must not be negative")
	}
	setup, err := o.setup(dir)
	if err != nil {
		return err
	}
	b, err := o.newBuild(setup, dir)
	if err != nil {
		return err
	}
	if err := o.checkStart(ctx, setup); err != nil {
		return err
	}
	lock, err := lockState(setup.stateDir)
	if err != nil {
		return err
	}
	defer lock.Release()

	var (
		report   event.Reporter
		buildLog io.Writer
	)
	if o.json {
		report, buildLog = event.NewJSON(stdout), stderr
		if os.Getenv("KWATCH_DEBUG_STATS") != "" { // for the bench's soak run
			report = event.WithStats(report)
		}
	} else {
		h := event.NewHuman(stdout)
		report, buildLog = h, h.BuildLog()
	}
	g, err := machine.Open(ctx, setup.vm, o.machineOptions(setup, report, stderr, stderr))
	if err != nil {
		return err
	}
	defer g.Close()
	// Connect first: the default --kdir comes from the guest's kernel release.
	s, err := g.Connect(ctx)
	if err != nil {
		return err
	}
	if b.builder == nil {
		if err := b.kbuild(filepath.Join("/lib/modules", s.Release(), "build"), &o); err != nil {
			return err
		}
	}
	var configChanged func(context.Context) error
	if b.nix {
		configChanged = func(ctx context.Context) error {
			if b.invalidate != nil {
				b.invalidate()
			}
			return g.Rebuild(ctx)
		}
	}
	var w *watcher.Watcher
	if !o.once {
		w, err = watcher.New(b.root, watcher.Options{Quiet: o.debounce, Ignore: []string{relIgnore(b.root, setup.stateDir)}})
		if err != nil {
			return err
		}
		defer w.Close()
	}
	err = loop.Run(ctx, loop.Config{
		Dir:           b.root,
		Watch:         w,
		Builder:       b.builder,
		Guest:         g,
		Params:        strings.Fields(o.params),
		Run:           o.run,
		RunTimeout:    o.runTimeout,
		Once:          o.once,
		Report:        report,
		BuildLog:      buildLog,
		StateDir:      setup.stateDir,
		ConfigChanged: configChanged,
	})
	if g.Managed() && !o.once {
		event.Notice(report, "the VM keeps running for the next run; `kwatch vm down` stops it")
	}
	return err
}

// relIgnore turns the state dir into an ignore pattern when it lies inside the watched tree.
func relIgnore(root, stateDir string) string {
	rel, err := filepath.Rel(root, stateDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	return "/" + filepath.ToSlash(rel) + "/"
}

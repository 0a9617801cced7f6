// Command kwatch hot-reloads a Linux kernel module into a running VM: it
// watches the module's sources, rebuilds the .ko on every save, pushes it into
// the guest over SFTP, reloads it and streams the guest's kernel log.
//
// One file per subcommand: watch.go (kwatch [DIR]), vm.go (kwatch vm),
// gdb.go, init.go, doctor.go and completion.go. They share flags.go (the flags), setup.go (what the
// flags resolve to), build.go (the builder), guest.go (the flags package
// machine opens the guest with) and errors.go (exit codes and usage errors).
// Calls go from this file to the subcommands to the shared files, never back.
package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// A closed terminal (SIGHUP) ends kwatch as ^C does: with its cleanup.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		// After the first ^C, a second one kills kwatch at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		for _, c := range subcommands() {
			if c.name == args[0] {
				return c.run(ctx, args[1:], stdout, stderr)
			}
		}
		if args[0] == "help" {
			return runWatch(ctx, []string{"-h"}, stdout, stderr)
		}
	}
	return runWatch(ctx, args, stdout, stderr)
}

// subcommand is one of kwatch's subcommands: how it runs, and what `kwatch
// -h` and the completion scripts say about it.
type subcommand struct {
	name  string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	flags func(*options, *flag.FlagSet) // nil: none
	// args is what its positional arguments complete to: these words, or
	// a directory when it is nil and dirArg is set.
	args   []string
	dirArg bool
	usage  string // its lines in `kwatch -h`: "call\tdescription\n"
}

// subcommands lists every subcommand; `kwatch [flags] [DIR]` is the default.
// A function, not a variable: completion reads the list it is part of.
func subcommands() []subcommand {
	return []subcommand{
		{name: "vm", run: runVM, flags: (*options).buildFlags, args: []string{"up", "down", "status", "ssh"},
			usage: "kwatch vm up|down|status [flags]\tstart / stop / describe the guest (it outlives kwatch)\n" +
				"kwatch vm ssh [flags] -- CMD\trun CMD in the guest, exit with its status\n"},
		{name: "gdb", run: runGDB, flags: (*options).gdbFlags, dirArg: true,
			usage: "kwatch gdb [flags] [DIR] [-- GDB_ARGS]\tgdb attached to the guest, with the loaded module's symbols\n"},
		{name: "init", run: runInit, flags: (*options).initFlags, dirArg: true,
			usage: "kwatch init [--force] [--name NAME] [DIR]\twrite a Nix flake project (NixOS VM, Rust kernel, Rust module)\n"},
		{name: "doctor", run: runDoctor, flags: (*options).doctorFlags,
			usage: "kwatch doctor [--json] [flags]\twhat this host has, what each kernel can do, the fix for each gap\n"},
		{name: "completion", run: runCompletion, args: []string{"bash", "zsh", "fish"},
			usage: "kwatch completion bash|zsh|fish\tprint the shell completion script\n"},
	}
}

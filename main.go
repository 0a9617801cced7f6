// Command kwatch hot-reloads a Linux kernel module into a running VM: it
// watches the module's sources, rebuilds the .ko on every save, pushes it into
// the guest over SFTP, reloads it and streams the guest's kernel log.
//
// One file per subcommand: watch.go (kwatch [DIR]), vm.go (kwatch vm),
// init.go (kwatch init). They share flags.go (the flags), setup.go (what the
// flags resolve to), build.go (the builder), guest.go (the machine: a VM or
// an SSH host) and errors.go (exit codes and usage errors). Calls go from
// this file to the subcommands to the shared files, never back.
package main

import (
	"context"
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
		switch args[0] {
		case "vm":
			return runVM(ctx, args[1:], stdout, stderr)
		case "gdb":
			return runGDB(ctx, args[1:], stdout, stderr)
		case "init":
			return runInit(args[1:], stdout, stderr)
		case "help":
			return runWatch(ctx, []string{"-h"}, stdout, stderr)
		}
	}
	return runWatch(ctx, args, stdout, stderr)
}

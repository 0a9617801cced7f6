// Package guest is the contract between kwatch's parts and the machine
// modules are loaded into: its Kind (parsed once from --vm), the Guest that
// owns it (package machine), the Session to one boot of it (package
// guest/ssh) and what a session answers. No SSH and no processes here.
package guest

import (
	"context"
	"io"
	"time"

	"kwatch/kmsg"
)

// Guest is the machine modules are loaded into. One owner (package machine)
// boots, checks and restarts it; others only ask it for a session and, for
// a guest that oopsed, for a restart.
type Guest interface {
	// Session returns a connected session, booting a managed VM that does
	// not run (and waiting for that boot).
	Session(ctx context.Context) (Session, error)
	// LogSession is Session for the kernel log stream, which asks again
	// every second: after a managed VM failed to boot it returns that
	// failure rather than booting again, until a Session or Restart does.
	LogSession(ctx context.Context) (Session, error)
	// Restart stops a managed VM and boots it again.
	Restart(ctx context.Context) (Session, error)
	// Managed reports whether kwatch owns the VM and so may restart it.
	Managed() bool
	// Running reports whether the managed VM's process of the current boot
	// still runs (false once it died, even if it was booted again); true
	// when unmanaged.
	Running() bool
	// BootID identifies the guest's current boot; it changes when the VM
	// restarted. "" before the first connection.
	BootID() string
	// ConsoleLog is the path of the VM's serial console log; "" when there is none.
	ConsoleLog() string
	// BeforeBoot registers fn to run before a dead VM is booted again, which
	// truncates its console log; nil removes it. fn runs on the goroutine
	// that owns the guest, which waits for it: it must not ask for a
	// session or a restart.
	BeforeBoot(fn func())
}

// Session is a connection to one boot of the guest. One question per method:
// kwatch sends no shell commands of its own through it, only the user's --run ones.
type Session interface {
	Release() string // uname -r
	BootID() string
	// Upload copies local into this run's private directory in the guest
	// as name and returns the path it got there.
	Upload(ctx context.Context, local, name string) (remote string, sent int64, err error)
	// LoadDeps loads what a module needs and is not loaded yet (its .modinfo
	// depends and softdep pre: names, and what they need in turn), in order,
	// from the guest kernel's own modules; it returns the modules it loaded.
	// A dependency that cannot be found is a *kmod.MissingError in the chain.
	LoadDeps(ctx context.Context, depends, softPre []string) (loaded []string, err error)
	// Reload replaces module name with the file remote (rmmod, insmod).
	Reload(ctx context.Context, name, remote string, params []string) (ReloadResult, error)
	// RunStream runs a --run command, copying its output to stdout and
	// stderr as it comes. When ctx ends the command is killed, with every
	// process it started.
	RunStream(ctx context.Context, cmd string, stdout, stderr io.Writer) (exit int, err error)
	// StreamKmsg calls fn for each kernel log record after seq after until
	// ctx is done or the connection drops.
	StreamKmsg(ctx context.Context, after uint64, fn func(kmsg.Record)) error
	WriteKmsg(ctx context.Context, msg string) error
	// KUnit reports whether the guest kernel runs a module's KUnit suites
	// while it loads (a kernel built with CONFIG_KUNIT).
	KUnit(ctx context.Context) (bool, error)
	// Tainted returns the kernel's taint flags.
	Tainted(ctx context.Context) (uint64, error)
	// ModuleUse says what keeps module name from being removed.
	ModuleUse(ctx context.Context, name string) (ModuleUse, error)
}

// ReloadResult says what Reload did. A failed rmmod leaves the old copy
// loaded and no insmod is tried.
type ReloadResult struct {
	Unloaded  bool   // an old copy was removed
	UnloadErr string // rmmod's error output if it failed (e.g. module in use)
	LoadErr   string // insmod's error output if it failed
	Took      time.Duration
}

// ModuleUse says what keeps a loaded module from being removed.
type ModuleUse struct {
	Refcnt    int      // /sys/module/M/refcnt; -1 when unknown
	InitState string   // /sys/module/M/initstate: "live", or "coming"/"going" for a module stuck in init or exit
	Holders   []string // modules that use it (/sys/module/M/holders)
	Openers   []string // processes with a device node open, as "pid 123 (sleep) has /dev/kwhold open"
}

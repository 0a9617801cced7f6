package loop

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"kwatch/guest"
	"kwatch/guest/vm"
)

// Guest is the machine modules are loaded into: a VM kwatch manages (VM set)
// or an existing machine reached over SSH. It hands out one shared SSH client
// and brings a managed VM back when it has died.
type Guest struct {
	VM          *vm.VM          // nil when the machine is not kwatch's (--vm ssh)
	SSH         guest.SSHConfig // Addr is taken from the VM's state when VM is set
	BootTimeout time.Duration
	Report      Reporter

	// beforeBoot runs before a dead VM is booted again, which truncates its
	// console log: the crash watcher reads the panic in it first.
	beforeBoot func()

	mu      sync.Mutex
	client  *guest.Client
	release string // uname -r

	// bootID has its own lock: the crash watcher asks for it while Connect
	// holds mu to boot the VM.
	idMu   sync.Mutex
	bootID string
}

// Connect returns a connected client and the guest's kernel release, booting
// or restarting a managed VM when needed.
func (g *Guest) Connect(ctx context.Context) (*guest.Client, string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.client != nil {
		if g.VM == nil {
			return g.client, g.release, nil
		}
		if _, running, _ := g.VM.Status(); running {
			return g.client, g.release, nil
		}
		g.dropClient()
		if g.beforeBoot != nil {
			g.beforeBoot()
		}
		g.Report.Report(Event{Type: "notice", Time: time.Now(), Message: "the VM is gone; booting it again"})
	}
	if g.VM != nil {
		before, _, _ := g.VM.Status()
		st, err := g.VM.Up(ctx, g.BootTimeout)
		if err != nil {
			return nil, "", err
		}
		g.SSH.Addr = fmt.Sprintf("127.0.0.1:%d", st.Port)
		// A NixOS VM booted afresh may come with a new host key (a new disk
		// image); kwatch started it, so the old pin is no proof of anything.
		// The qemu backend's key lives in the state dir and never changes.
		if st.PID != before.PID && g.VM.Backend == "nix" {
			if err := guest.ForgetHost(g.SSH.KnownHosts, g.SSH.Addr); err != nil {
				return nil, "", err
			}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, g.BootTimeout)
	defer cancel()
	c, err := guest.Dial(dctx, g.SSH)
	if err != nil {
		return nil, "", fmt.Errorf("connecting to the guest at %s: %w", g.SSH.Addr, err)
	}
	out, _, exit, err := c.Run(ctx, "uname -r; cat /proc/sys/kernel/random/boot_id")
	if err != nil || exit != 0 {
		c.Close()
		return nil, "", fmt.Errorf("asking the guest for its kernel release: %v (exit %d)", err, exit)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		c.Close()
		return nil, "", fmt.Errorf("asking the guest for its kernel release: unexpected answer %q", out)
	}
	g.client, g.release = c, f[0]
	g.idMu.Lock()
	g.bootID = f[1]
	g.idMu.Unlock()
	g.Report.Report(Event{Type: "vm_ready", Time: time.Now(), Addr: g.SSH.Addr,
		Message: fmt.Sprintf("guest %s ready (ssh %s)", g.release, g.SSH.Addr)})
	return c, g.release, nil
}

// Restart stops a managed VM and boots it again: for a guest that oopsed or
// stopped answering.
func (g *Guest) Restart(ctx context.Context) (*guest.Client, string, error) {
	g.mu.Lock()
	g.dropClient()
	err := g.VM.Down()
	g.mu.Unlock()
	if err != nil {
		return nil, "", fmt.Errorf("restarting the VM: %w", err)
	}
	return g.Connect(ctx)
}

// BootID identifies the guest's current boot; it changes when the VM restarted
// (and with it the kernel log's sequence numbers).
func (g *Guest) BootID() string {
	g.idMu.Lock()
	defer g.idMu.Unlock()
	return g.bootID
}

// Close drops the SSH connection; a managed VM keeps running for the next run.
func (g *Guest) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropClient()
}

// Reboot lets update change the managed VM (its Ident and Launch); when update
// reports a change the connection is dropped, so the next Connect boots the
// VM anew (Up restarts a VM whose Ident differs).
func (g *Guest) Reboot(update func(*vm.VM) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.VM == nil || !update(g.VM) {
		return
	}
	g.dropClient()
}

// dropClient closes the shared connection; the caller holds mu.
func (g *Guest) dropClient() {
	if g.client != nil {
		g.client.Close()
		g.client = nil
	}
}

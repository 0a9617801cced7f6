package machine

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/nix"
	"kwatch/statedir"
)

// Options is what the flags say about the guest; each kind reads its own.
type Options struct {
	StateDir    string
	BootTimeout time.Duration // how long to wait for the guest's SSH; 0: 2m, 10m for a NixOS VM
	Report      event.Reporter
	// Log gets the output of long work that is not an event: building a NixOS VM.
	Log io.Writer
	// Stderr is where an unknown host key is asked about (the answer is
	// read from stdin on a terminal) and where Dial's notices go.
	Stderr io.Writer

	Accel string // auto, kvm or tcg: how a managed VM runs

	// QEMU: the kernel image (default: the newest installed) and its modules.
	Kernel, ModulesDir string

	// Nix: the flake, its VM's attribute and the settings nix runs with.
	Flake, NixVMAttr string
	Nix              nix.Settings

	// SSH: [user@]host[:port], the private key (default: as ssh finds it)
	// and the fingerprint of a host key to accept on first contact.
	Target, Identity, AcceptHostKey string
	// Home is where ~/.ssh is; "" is the user's home.
	Home string
}

// InputError is input the guest cannot be reached with: what is wrong and
// how to fix it.
type InputError struct{ Msg, Fix string }

func (e *InputError) Error() string { return e.Msg }
func (e *InputError) Hint() string  { return e.Fix }

func inputf(fix, format string, a ...any) error {
	return &InputError{Msg: fmt.Sprintf(format, a...), Fix: fix}
}

// Check checks what opening a guest of kind needs from the flags, before
// the state dir is created or anything runs: bad input must cost nothing.
func Check(kind guest.Kind, o Options) error {
	var err error
	switch kind {
	case guest.QEMU:
		_, err = qemuKernel(o)
	case guest.SSH:
		_, err = sshTarget(o)
	}
	return err
}

// Open prepares the guest of kind (building a NixOS VM first) and starts
// its owner; nothing boots until the first Session or Connect.
func Open(ctx context.Context, kind guest.Kind, o Options) (*Machine, error) {
	notify := func(msg string) { event.Notice(o.Report, msg) }
	cfg := Config{Report: o.Report, BootTimeout: o.BootTimeout}
	var rebuild func(context.Context, *Machine) error
	var err error
	switch kind {
	case guest.QEMU:
		cfg.VM, err = qemuVM(o, notify)
	case guest.Nix:
		cfg.VM, err = nixVM(ctx, o, notify)
		rebuild = func(ctx context.Context, m *Machine) error { return relaunchNixVM(ctx, o, m) }
	case guest.SSH:
		cfg.SSH, err = sshTarget(o)
		cfg.SSH.Notify = notify
	default:
		err = fmt.Errorf("no guest of kind %v", kind)
	}
	if err != nil {
		return nil, err
	}
	if cfg.VM != nil {
		if cfg.SSH, err = managedSSH(o.StateDir, kind); err != nil {
			return nil, err
		}
		cfg.SSH.Notify = notify
	}
	cfg.SSH.UploadRecord = filepath.Join(o.StateDir, "uploads.json")
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 2 * time.Minute
		if kind == guest.Nix {
			cfg.BootTimeout = 10 * time.Minute
		}
	}
	m := &Machine{cfg: cfg, rebuild: rebuild, knownHosts: cfg.SSH.KnownHosts, acceptHostKey: o.AcceptHostKey, stderr: o.Stderr}
	return m.start(ctx), nil
}

// Connect is the first Session: a host key that no known_hosts file knows
// is shown and pinned only when the user accepts it.
func (m *Machine) Connect(ctx context.Context) (s guest.Session, err error) {
	err = trustNewHost(m.knownHosts, m.acceptHostKey, m.stderr, func() (err error) {
		s, err = m.Session(ctx)
		return err
	})
	return s, err
}

// Rebuild builds the guest again after its configuration changed (a .nix
// edit): a NixOS VM is rebuilt, and booted anew by the next Session when it
// changed. Other kinds have nothing to rebuild.
func (m *Machine) Rebuild(ctx context.Context) error {
	if m.rebuild == nil {
		return nil
	}
	return m.rebuild(ctx, m)
}

// Dial reaches the running guest without booting one: the managed VM
// recorded in the state dir, or the --ssh target (asking about its host key
// as Connect does). ready, unless nil, runs once the guest is known to be
// there and before the dial, which may take its 30 s on a guest a debugger
// holds stopped: what can fail at once fails first. Notices go to o.Stderr
// unless it is nil.
func Dial(ctx context.Context, kind guest.Kind, o Options, ready func() error) (*ssh.Client, error) {
	var cfg ssh.Config
	var err error
	if kind == guest.SSH {
		if err := statedir.Create(o.StateDir); err != nil { // known_hosts goes there
			return nil, err
		}
		cfg, err = sshTarget(o)
	} else {
		cfg, err = runningSSH(o.StateDir)
	}
	if err != nil {
		return nil, err
	}
	if ready != nil {
		if err := ready(); err != nil {
			return nil, err
		}
	}
	if o.Stderr != nil {
		cfg.Notify = func(msg string) { fmt.Fprintln(o.Stderr, "kwatch: "+msg) }
	}
	var c *ssh.Client
	err = trustNewHost(cfg.KnownHosts, o.AcceptHostKey, o.Stderr, func() (err error) {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err = ssh.Dial(dctx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to the guest at %s: %w", cfg.Addr, err)
	}
	return c, nil
}

// runningSSH reaches the managed VM running from stateDir.
func runningSSH(stateDir string) (ssh.Config, error) {
	st, ok, err := vm.ReadState(stateDir)
	if err != nil {
		return ssh.Config{}, err
	}
	if _, running, _ := (&vm.Process{StateDir: stateDir}).Status(); !ok || !running {
		return ssh.Config{}, inputf("start it with `kwatch vm up` or `kwatch DIR`", "no VM is running (state dir %s)", stateDir)
	}
	cfg, err := managedSSH(stateDir, st.Kind)
	cfg.Addr = fmt.Sprintf("127.0.0.1:%d", st.Port)
	return cfg, err
}

// managedSSH is how kwatch logs into a VM it manages (Addr comes from the
// VM's state). The qemu backend's guest gets host keys kwatch made, so
// exactly those are pinned; a NixOS VM makes its own, pinned on first use.
func managedSSH(stateDir string, kind guest.Kind) (ssh.Config, error) {
	signer, _, err := ssh.LoadOrCreateKey(stateDir)
	if err != nil {
		return ssh.Config{}, err
	}
	// kwatch started the VM, so a NixOS VM's first host key is trusted.
	cfg := ssh.Config{User: "root", Signers: []xssh.Signer{signer}, KnownHosts: filepath.Join(stateDir, "known_hosts"), TrustNew: true}
	if kind == guest.QEMU {
		if cfg.HostKeys, err = vm.HostPublicKeys(stateDir); err != nil {
			return ssh.Config{}, err
		}
	}
	return cfg, nil
}

// AuthorizedKey is the authorized_keys line of kwatch's own SSH key in
// stateDir (made on first use), for a NixOS VM's configuration.
func AuthorizedKey(stateDir string) (string, error) {
	_, line, err := ssh.LoadOrCreateKey(stateDir)
	return strings.TrimSpace(string(line)), err
}

// gdbIdent marks a VM's Ident as booted with the gdb socket. A running VM
// recorded without the mark was started before kwatch had one: Up restarts
// it (its Ident differs), once, and the user is told why.
func gdbIdent(stateDir, ident string, notify func(string)) string {
	if st, ok, _ := vm.ReadState(stateDir); ok && !strings.HasSuffix(st.Ident, vm.GDBIdent) {
		if _, running, _ := (&vm.Process{StateDir: stateDir}).Status(); running {
			notify("the VM was started without a gdb socket: restarting it once so `kwatch gdb` can attach")
		}
	}
	return ident + vm.GDBIdent
}

package machine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/guest/vm"
	"kwatch/nix"
)

// nixVM builds the flake's VM (this can take long the first time; nix shows
// its progress) and returns the VM that runs it.
func nixVM(ctx context.Context, o Options, notify func(string)) (*vm.Process, error) {
	out, err := buildNixVM(ctx, o, notify)
	if err != nil {
		return nil, err
	}
	return &vm.Process{
		StateDir: o.StateDir,
		Kind:     guest.Nix,
		Ident:    gdbIdent(o.StateDir, out, notify),
		Accel:    o.Accel,
		Notify:   notify,
		Launch:   nix.VMLauncher(out, o.StateDir, ""),
	}, nil
}

// relaunchNixVM rebuilds the flake's VM after a .nix edit; the machine boots
// it anew when it changed.
func relaunchNixVM(ctx context.Context, o Options, m *Machine) error {
	out, err := buildNixVM(ctx, o, func(msg string) { event.Notice(o.Report, msg) })
	if err != nil {
		return err
	}
	return m.Relaunch(ctx, out+vm.GDBIdent, nix.VMLauncher(out, o.StateDir, ""))
}

func buildNixVM(ctx context.Context, o Options, notify func(string)) (string, error) {
	installable := o.Flake + "#" + o.NixVMAttr
	// Say so before nix compiles a kernel for hours. A failed dry run says
	// nothing: the build itself reports what is wrong.
	if plan, err := o.Nix.DryRun(ctx, installable); err == nil && plan.Kernel() != "" {
		notify(plan.Kernel())
	}
	notify("building the VM (" + o.NixVMAttr + ")")
	// The first build may fetch or compile a kernel: show where it is.
	progress := &nix.Progress{W: o.Log}
	if f, ok := o.Log.(*os.File); ok {
		progress.Terminal = isTerminal(f)
	}
	outs, err := o.Nix.Build(ctx, installable, filepath.Join(o.StateDir, "vm-result"), progress)
	if err != nil {
		return "", fmt.Errorf("building the VM: %w", err)
	}
	if len(outs) == 0 {
		return "", fmt.Errorf("building the VM: nix build returned no output path")
	}
	return outs[0], nil
}

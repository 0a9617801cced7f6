package guest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Identify asks the guest which kernel it runs (uname -r) and which boot
// this is (a new id after every reboot).
func (c *Client) Identify(ctx context.Context) (release, bootID string, err error) {
	out, errOut, exit, err := c.Run(ctx, "uname -r; cat /proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", "", fmt.Errorf("asking the guest for its kernel release: %w", err)
	}
	if exit != 0 {
		return "", "", fmt.Errorf("asking the guest for its kernel release: exit %d: %s", exit, strings.TrimSpace(string(errOut)))
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return "", "", fmt.Errorf("asking the guest for its kernel release: unexpected answer %q", out)
	}
	return f[0], f[1], nil
}

// Tainted returns the guest kernel's taint flags (/proc/sys/kernel/tainted).
func (c *Client) Tainted(ctx context.Context) (uint64, error) {
	// Not the shell's read: dash and busybox read a byte at a time, and a
	// sysctl read at an offset past 0 ends, so they see the first digit only.
	out, exit, err := c.script(ctx, "cat /proc/sys/kernel/tainted")
	if err != nil {
		return 0, err
	}
	v, perr := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if exit != 0 || perr != nil {
		return 0, fmt.Errorf("reading the guest's taint flags: unexpected answer %q (exit %d)", out, exit)
	}
	return v, nil
}

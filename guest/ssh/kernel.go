package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// Tainted returns the guest kernel's taint flags (/proc/sys/kernel/tainted),
// read over the kept SFTP session: no process started in the guest (this
// comes before every load), and one read at offset 0. A sysctl file ends
// for a read past offset 0, so a shell's read builtin, which reads a byte at
// a time, would see only the first digit.
func (c *Client) Tainted(ctx context.Context) (taint uint64, err error) {
	sc, release, err := c.sftp(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { release(err) }()
	f, err := sc.Open("/proc/sys/kernel/tainted")
	if err != nil {
		return 0, fmt.Errorf("reading the guest's taint flags: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("reading the guest's taint flags: %w", err)
	}
	v, perr := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	if perr != nil {
		return 0, fmt.Errorf("reading the guest's taint flags: unexpected answer %q", buf[:n])
	}
	return v, nil
}

// KUnit reports whether the guest kernel runs a module's KUnit suites when it
// loads: only a kernel built with CONFIG_KUNIT does, and its KUnit (built in,
// or the kunit module once loaded) shows in sysfs as /sys/module/kunit, for
// the parameters it has. One stat over the kept SFTP session.
func (c *Client) KUnit(ctx context.Context) (ok bool, err error) {
	sc, release, err := c.sftp(ctx)
	if err != nil {
		return false, err
	}
	defer func() { release(err) }()
	if _, err := sc.Stat("/sys/module/kunit"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("asking the guest whether its kernel has KUnit: %w", err)
	}
	return true, nil
}

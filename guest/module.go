package guest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"
)

// ReloadResult says what Reload did. A failed rmmod leaves the old copy
// loaded and no insmod is tried.
type ReloadResult struct {
	Unloaded  bool   // an old copy was removed
	UnloadErr string // rmmod's error output if it failed (e.g. module in use)
	LoadErr   string // insmod's error output if it failed
	Took      time.Duration
}

// Reload replaces module name with the module file remoteKO in the guest:
// rmmod if it is loaded, then insmod remoteKO with params (each one quoted).
// The error is for failures to reach the guest; a failed rmmod or insmod is
// reported in the result.
func (c *Client) Reload(ctx context.Context, name, remoteKO string, params []string) (res ReloadResult, err error) {
	defer func(start time.Time) { res.Took = time.Since(start) }(time.Now())
	loaded, err := c.Loaded(ctx, name)
	if err != nil {
		return res, err
	}
	if loaded {
		res.UnloadErr, err = c.try(ctx, "rmmod "+Quote(name))
		if err != nil || res.UnloadErr != "" {
			return res, err
		}
		res.Unloaded = true
	}
	cmd := "insmod " + Quote(remoteKO)
	for _, p := range params {
		cmd += " " + Quote(p)
	}
	res.LoadErr, err = c.try(ctx, cmd)
	return res, err
}

// try runs cmd and returns its error output if it failed, or "".
func (c *Client) try(ctx context.Context, cmd string) (string, error) {
	stdout, stderr, exit, err := c.Run(ctx, cmd)
	if err != nil || exit == 0 {
		return "", err
	}
	if msg := strings.TrimSpace(string(stderr) + string(stdout)); msg != "" {
		return msg, nil
	}
	return fmt.Sprintf("%s: exit status %d", cmd, exit), nil
}

// Loaded reports whether /proc/modules in the guest lists module name.
// Hyphens and underscores are the same in module names, as for modprobe.
func (c *Client) Loaded(ctx context.Context, name string) (bool, error) {
	stdout, stderr, exit, err := c.Run(ctx, "cat /proc/modules")
	if err != nil {
		return false, err
	}
	if exit != 0 {
		return false, fmt.Errorf("reading /proc/modules in the guest: %s", strings.TrimSpace(string(stderr)))
	}
	return listsModule(stdout, name), nil
}

// listsModule reports whether the /proc/modules text lists module name.
func listsModule(procModules []byte, name string) bool {
	want := strings.ReplaceAll(name, "-", "_")
	sc := bufio.NewScanner(bytes.NewReader(procModules))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == want {
			return true
		}
	}
	return false
}

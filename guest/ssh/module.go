package ssh

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"kwatch/guest"
	"kwatch/kmod"
	"strings"
	"time"
)

// Reload replaces module name with the module file remoteKO in the guest:
// rmmod if it is loaded, then insmod remoteKO with params (each one quoted).
// The error is for failures to reach the guest; a failed rmmod or insmod is
// reported in the result.
func (c *Client) Reload(ctx context.Context, name, remoteKO string, params []string) (res guest.ReloadResult, err error) {
	defer func(start time.Time) { res.Took = time.Since(start) }(time.Now())
	// One script in the kept shell, which execs nothing but rmmod and insmod:
	// reload latency is what kwatch is about. A loaded module has an
	// initstate in sysfs (a built-in one has not); /proc/modules is read only
	// where sysfs is not mounted.
	insmod := "insmod " + Quote(remoteKO)
	for _, p := range params {
		insmod += " " + Quote(p)
	}
	mod := Quote(kmod.Name(name))
	loaded := fmt.Sprintf("[ -e /sys/module/%s/initstate ] || { [ ! -d /sys/module ] && grep -q \"^\"%s\" \" /proc/modules; }", mod, mod)
	script := fmt.Sprintf("if %s; then rmmod %s || exit %d; echo %s; fi; exec %s",
		loaded, mod, rmmodFailed, unloadedMark, insmod)
	out, exit, err := c.script(ctx, script)
	res.Unloaded = strings.Contains(string(out), unloadedMark)
	if err != nil {
		return res, err
	}
	switch {
	case exit == rmmodFailed:
		res.UnloadErr = failure(out, "rmmod "+name, exit)
	case exit != 0:
		res.LoadErr = failure(out, insmod, exit)
	}
	return res, nil
}

const (
	rmmodFailed  = 97 // exit status of Reload's script when rmmod failed
	unloadedMark = "kwatch-unloaded"
)

// failure is a failed command's output, or a line naming it when it printed nothing.
func failure(out []byte, cmd string, exit int) string {
	if msg := strings.TrimSpace(strings.ReplaceAll(string(out), unloadedMark, "")); msg != "" {
		return msg
	}
	return fmt.Sprintf("%s: exit status %d", cmd, exit)
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
	want := kmod.Name(name)
	sc := bufio.NewScanner(bytes.NewReader(procModules))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == want {
			return true
		}
	}
	return false
}

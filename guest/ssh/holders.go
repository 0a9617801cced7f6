package ssh

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"kwatch/guest"
	"kwatch/kmod"
)

// useScript prints refcnt, initstate, holders and every process's open
// files. Busybox-compatible: ls -l shows an fd's target after "->".
const useScript = `m=/sys/module/%s
echo "refcnt $(cat $m/refcnt)"
echo "initstate $(cat $m/initstate)"
for h in $m/holders/*; do [ -e "$h" ] && echo "holder ${h##*/}"; done
for p in /proc/[0-9]*; do
	read c < $p/comm || continue
	echo "proc ${p#/proc/} $c"
	ls -l $p/fd
done`

// ModuleUse asks the guest who holds module name. Finding the processes is
// best effort: a module may be held through a device node, which is what is
// listed, or through something no file shows (a socket, a timer).
func (c *Client) ModuleUse(ctx context.Context, name string) (guest.ModuleUse, error) {
	mod := kmod.Name(name)
	stdout, _, _, err := c.Run(ctx, fmt.Sprintf(useScript, Quote(mod))+" 2>/dev/null")
	if err != nil {
		return guest.ModuleUse{}, fmt.Errorf("asking the guest who uses %s: %w", name, err)
	}
	return parseModuleUse(string(stdout)), nil
}

func parseModuleUse(out string) guest.ModuleUse {
	u := guest.ModuleUse{Refcnt: -1}
	proc := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "refcnt":
			if n, err := strconv.Atoi(strings.TrimSpace(val)); err == nil {
				u.Refcnt = n
			}
		case "initstate":
			u.InitState = strings.TrimSpace(val)
		case "holder":
			u.Holders = append(u.Holders, val)
		case "proc":
			pid, comm, _ := strings.Cut(val, " ")
			proc = fmt.Sprintf("pid %s (%s)", pid, comm)
		default:
			if _, target, ok := strings.Cut(line, " -> "); ok && proc != "" && userDevice(target) {
				u.Openers = append(u.Openers, proc+" has "+target+" open")
			}
		}
	}
	return u
}

// userDevice reports whether an open file is a device node a module may
// provide, leaving out the ones every guest process has open.
func userDevice(target string) bool {
	if !strings.HasPrefix(target, "/dev/") {
		return false
	}
	switch target {
	case "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
		"/dev/console", "/dev/ptmx", "/dev/kmsg", "/dev/log", "/dev/tty":
		return false
	}
	return !strings.HasPrefix(target, "/dev/pts/") && !strings.HasPrefix(target, "/dev/tty")
}

package statedir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// UnsafeError is a state dir that someone else could change: Error says who
// and how, Fix what to do about it.
type UnsafeError struct{ Why, Fix string }

func (e *UnsafeError) Error() string { return e.Why }

// maxLinks is how many symlinks a path may pass through, as for the kernel.
const maxLinks = 40

// Check refuses a state dir that anyone but you and root could change:
// kwatch trusts what it finds there (gdb runs gdb-follow's lines, the guest
// authorises id_ed25519, vm down signals the process vm.json names). The
// path is walked as the kernel resolves it: each directory on the way must
// belong to root or you and be writable by no one else, unless it is
// sticky like /tmp (there each entry stays its owner's); each symlink must
// belong to root or you; the state dir itself must be yours and writable
// by you alone. Missing dirs at the end are fine: Create makes them.
func Check(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	me := uint32(os.Geteuid())
	at, todo, links := "/", parts(dir), 0
	for len(todo) > 0 {
		// A name is looked up in at: whoever can change at can change it.
		if err := checkDir(at, me, false); err != nil {
			return err
		}
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			at = filepath.Dir(at)
			continue
		}
		p := filepath.Join(at, name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking the state dir %s: %w", dir, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			at = p
			continue
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 && uid != me {
			return &UnsafeError{
				Why: fmt.Sprintf("%s, on the way to the state dir, is a symlink owned by uid %d: its owner chooses where the state dir is", p, uid),
				Fix: "pass the state dir's real path with --state-dir, or remove the link",
			}
		}
		if links++; links > maxLinks {
			return &UnsafeError{Why: fmt.Sprintf("too many symlinks on the way to the state dir %s", dir), Fix: "pass the state dir's real path with --state-dir"}
		}
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("checking the state dir %s: %w", dir, err)
		}
		if filepath.IsAbs(target) {
			at = "/"
		}
		todo = append(parts(target), todo...)
	}
	return checkDir(at, me, true)
}

// parts splits a path into the names the kernel walks through.
func parts(p string) []string {
	var names []string
	for _, n := range strings.Split(p, "/") {
		if n != "" && n != "." {
			names = append(names, n)
		}
	}
	return names
}

// checkDir checks one directory on the way to the state dir, or (last) the
// state dir itself.
func checkDir(p string, me uint32, last bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("checking the state dir: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := st.Mode & 0o7777
	what, swap := p+", above the state dir,", "swap the state dir for one of their own"
	elsewhere := "pass a --state-dir in dirs only you and root can change, e.g. under your home"
	if last {
		what, swap = "the state dir "+p, "plant the keys and commands kwatch uses"
		elsewhere = "pass a --state-dir of your own (kwatch makes it), or have " + p + " removed so kwatch makes it anew"
	}
	switch {
	case !fi.IsDir():
		return &UnsafeError{Why: what + " is not a directory", Fix: "pass a --state-dir that is a directory, or let kwatch make it"}
	case last && st.Uid != me, !last && st.Uid != 0 && st.Uid != me:
		return &UnsafeError{Why: fmt.Sprintf("%s belongs to uid %d, not to you (uid %d): its owner can %s", what, st.Uid, me, swap), Fix: elsewhere}
	}
	writers := mode & 0o022
	switch {
	case last:
	case mode&syscall.S_ISVTX != 0:
		writers = 0 // sticky: others may add entries, but not rename or remove ours
	case writers == 0o020 && privateGroupOf(st.Gid, me):
		writers = 0 // a group of yours alone
	}
	if writers == 0 {
		return nil
	}
	who := map[uint32]string{0o020: "its group", 0o002: "others", 0o022: "its group and others"}[writers]
	fix := "chmod go-w " + p + ", or pass a --state-dir elsewhere"
	if last {
		fix = "if no one else could have written to it, chmod go-w " + p + "; else delete it and let kwatch make a new one"
	}
	return &UnsafeError{Why: fmt.Sprintf("%s is writable by %s (mode %04o): they can %s", what, who, mode, swap), Fix: fix}
}

// privateGroupOf reports whether gid is a group only uid is in, from the
// system's account files.
func privateGroupOf(gid, uid uint32) bool {
	passwd, err1 := os.ReadFile("/etc/passwd")
	group, err2 := os.ReadFile("/etc/group")
	return err1 == nil && err2 == nil && privateGroup(gid, uid, passwd, group)
}

// privateGroup reports whether gid is a group only uid is in: some account
// of uid's has it as primary group or is listed in it, and no other account
// is either. Debian gives each user such a group, with a umask of 002 that
// makes every dir they create writable by it. A group missing from
// /etc/group (held in a directory service, say) has members kwatch cannot
// list: not private.
func privateGroup(gid, uid uint32, passwd, group []byte) bool {
	var names []string
	member := false
	for _, f := range fields(passwd) {
		if len(f) < 4 {
			continue
		}
		u, err1 := strconv.ParseUint(f[2], 10, 32)
		g, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if uint32(u) == uid {
			names = append(names, f[0])
		}
		if uint32(g) == gid {
			if uint32(u) != uid {
				return false
			}
			member = true
		}
	}
	for _, f := range fields(group) {
		if len(f) < 4 || f[2] != strconv.FormatUint(uint64(gid), 10) {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == "" {
				continue
			}
			if !slices.Contains(names, m) {
				return false
			}
			member = true
		}
		return member
	}
	return false
}

// fields splits the lines of a colon-separated account file.
func fields(b []byte) [][]string {
	var all [][]string
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) > 0 && line[0] != '#' {
			all = append(all, strings.Split(string(line), ":"))
		}
	}
	return all
}

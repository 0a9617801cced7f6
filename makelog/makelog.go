// Package makelog learns from GNU make what it runs: every recipe line, with
// its target, prerequisites, working directory and environment, in the
// order make started them. make runs each recipe line as `$(SHELL)
// $(.SHELLFLAGS) LINE` and expands $(SHELL) per target, and a SHELL given on
// the command line reaches every sub-make through MAKEFLAGS; so with the
// argument Arg returns, make runs this program (kwatch, or a test binary:
// see init) for every line. It appends one entry to the log and becomes
// /bin/sh running the line, as make would have: no process more than make's.
package makelog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Line is one line make ran.
type Line struct {
	Target    string   `json:"t"`           // $@ as make names it
	Prereqs   []string `json:"p,omitempty"` // $^ and $| (order-only)
	Dir       string   `json:"d"`           // the working directory
	Env       []string `json:"e"`
	Flags     []string `json:"f,omitempty"` // .SHELLFLAGS
	Text      string   `json:"l"`
	PID       int      `json:"pid"`  // the shell that ran it
	Make      int      `json:"make"` // the make that ran it
	MakeOwner int      `json:"up"`   // what ran that make
	// Shell marks a $(shell ...) call, which make runs through SHELL too
	// (also while it expands a recipe's exported variables, with $@ set):
	// its output goes back to make, not to make's own output.
	Shell bool `json:"s,omitempty"`
}

// recipeArg is the first argument of the recorder's mode.
const recipeArg = "-kwatch-make-recipe"

// Arg returns the make argument that logs every recipe line to log through
// program (an absolute path: kwatch's own, os.Executable).
func Arg(program, log string) (string, error) {
	for _, p := range []string{program, log} {
		if strings.ContainsAny(p, " \t\n\\'\"$#%") {
			return "", fmt.Errorf("make's SHELL cannot name %q: it holds a space or a character make or sh would read", p)
		}
	}
	return "SHELL=" + program + " " + recipeArg + " " + log + " T=$@ --prereqs $^ $| --", nil
}

// make starts the recorder once per line, both in kwatch and in the test
// binaries that run make through the builder: each sees its own first
// argument here, before anything else runs.
func init() {
	if len(os.Args) > 1 && os.Args[1] == recipeArg {
		err := record(os.Args[2:])
		fmt.Fprintf(os.Stderr, "kwatch's make recorder: %v\n", err)
		os.Exit(127)
	}
}

// record logs one line and runs it; it returns only if it cannot.
// args: LOG T=TARGET --prereqs PREREQ... -- SHELLFLAG... LINE
func record(args []string) error {
	if len(args) < 5 || !strings.HasPrefix(args[1], "T=") || args[2] != "--prereqs" {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	log := args[0]
	l := Line{Target: strings.TrimPrefix(args[1], "T="), Env: os.Environ(), PID: os.Getpid(), Make: os.Getppid()}
	rest := args[3:]
	end := len(rest) - 1
	for end >= 0 && rest[end] != "--" {
		end--
	}
	if end < 0 || end == len(rest)-1 {
		return fmt.Errorf("no line in %q", args)
	}
	l.Prereqs = rest[:end]
	l.Flags, l.Text = rest[end+1:len(rest)-1], rest[len(rest)-1]
	l.Dir, _ = os.Getwd()
	l.MakeOwner = parentOf(l.Make)
	self, _ := os.Readlink("/proc/self/fd/1")
	makes, _ := os.Readlink("/proc/" + strconv.Itoa(l.Make) + "/fd/1")
	l.Shell = self != makes
	// A log that is gone belongs to a make that ended (a line run again
	// later with its environment): the line still runs.
	if err := appendEntry(log, l); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syscall.Exec("/bin/sh", append(append([]string{"/bin/sh"}, l.Flags...), l.Text), os.Environ())
}

// parentOf returns the parent of process pid, 0 if unknown.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// appendEntry appends l to the log as one JSON line, under an exclusive
// lock: make -j runs lines in parallel.
func appendEntry(log string, l Line) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	return err
}

// Read returns the lines a make logged to log, in the order it started them.
func Read(log string) ([]Line, error) {
	f, err := os.Open(log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("reading make's log %s: %w", log, err)
		}
		lines = append(lines, l)
	}
	return lines, sc.Err()
}

// Recursive reports which lines ran a make of their own: the lines whose
// shell is, or started, the make that ran another line.
func Recursive(lines []Line) map[int]bool {
	shells := map[int]bool{}
	for _, l := range lines {
		shells[l.PID] = true
	}
	rec := map[int]bool{}
	for _, l := range lines {
		for _, pid := range []int{l.Make, l.MakeOwner} {
			if shells[pid] {
				rec[pid] = true
			}
		}
	}
	return rec
}

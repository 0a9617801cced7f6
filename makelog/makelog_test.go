package makelog

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A plain make project (no Kbuild) whose recipes run in a sub-make in
// another directory: every line is logged with its target, prerequisites,
// working directory and environment, and run as make would run it.
func TestRecordPlainMake(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"Makefile": "all: top.txt\n" +
			"sub/out.txt: FORCE\n\t$(MAKE) -C sub\n" +
			"top.txt: sub/out.txt | sub\n\tprintf '%s\\n' \"a 'q' $$KW_TOP #x\" \\\n\t  > $@\n" +
			"export KW_TOP := top\n.PHONY: FORCE\n",
		"sub/Makefile": "X := $(shell echo parsed)\nexport KW_VAR = value-$(X)\n" +
			"out.txt: in.txt\n\tcp $< $@\n\t@echo \"$$KW_VAR\" >> $@\n",
		"sub/in.txt": "in\n",
	}
	for name, content := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "make.log")
	if err := os.WriteFile(log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	arg, err := Arg(exe, log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-j2", arg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	for name, want := range map[string]string{"sub/out.txt": "in\nvalue-parsed\n", "top.txt": "a 'q' top #x\n"} {
		if got, _ := os.ReadFile(filepath.Join(dir, name)); string(got) != want {
			t.Errorf("%s = %q, want %q (the lines did not run as make runs them)", name, got, want)
		}
	}
	lines, err := Read(log)
	if err != nil {
		t.Fatal(err)
	}
	rec := Recursive(lines)
	type seen struct{ target, dir, text string }
	var got []seen
	for _, l := range lines {
		if l.Shell {
			if l.Text != "echo parsed" {
				t.Errorf("$(shell) call %q, want echo parsed", l.Text)
			}
			continue
		}
		got = append(got, seen{l.Target, l.Dir, l.Text})
		env := strings.Join(l.Env, "\n")
		switch l.Target {
		case "sub/out.txt":
			if !rec[l.PID] {
				t.Errorf("the line that runs the sub-make is not marked recursive")
			}
		case "out.txt":
			if !strings.Contains(env, "KW_VAR=value-parsed") || !slices.Equal(l.Prereqs, []string{"in.txt"}) || rec[l.PID] {
				t.Errorf("sub-make line %q: prereqs %q, KW_VAR in env %v, recursive %v", l.Text, l.Prereqs, strings.Contains(env, "KW_VAR="), rec[l.PID])
			}
		case "top.txt":
			if !slices.Equal(l.Prereqs, []string{"sub/out.txt", "sub"}) || !strings.Contains(env, "KW_TOP=top") {
				t.Errorf("top.txt: prereqs %q (want $^ then $|), KW_TOP in env %v", l.Prereqs, strings.Contains(env, "KW_TOP=top"))
			}
		}
	}
	want := []seen{
		{"sub/out.txt", dir, "make -C sub"},
		{"out.txt", filepath.Join(dir, "sub"), "cp in.txt out.txt"},
		{"out.txt", filepath.Join(dir, "sub"), `echo "$KW_VAR" >> out.txt`},
		{"top.txt", dir, "printf '%s\\n' \"a 'q' $KW_TOP #x\" \\\n  > top.txt"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("logged lines:\n got %q\nwant %q", got, want)
	}
}

func TestArgRejectsWhatMakeWouldRead(t *testing.T) {
	for _, p := range []string{"/a b/kwatch", "/a$b/kwatch", "/a'b"} {
		if _, err := Arg(p, "/tmp/log"); err == nil {
			t.Errorf("Arg(%q) succeeded", p)
		}
	}
	if _, err := Arg("/usr/bin/kwatch", "/tmp/x/make.log"); err != nil {
		t.Error(err)
	}
}

// A line run again later with the environment make gave it may start a
// make that still names the recorder and a log that is gone: the line runs.
func TestRecorderWithoutLog(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, recipeArg, filepath.Join(t.TempDir(), "gone", "log"), "T=x", "--prereqs", "--", "-c", "echo ran").CombinedOutput()
	if err != nil || string(out) != "ran\n" {
		t.Errorf("recorder without its log: %v, %q; want the line run", err, out)
	}
}

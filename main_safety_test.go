package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kwatch/guest"
	"kwatch/guest/ssh"
	"kwatch/guest/vm"
	"kwatch/nix/nixtest"
	"kwatch/proc"
)

// vm.json naming a process that merely leads its own session (an unrelated
// process after a reboot or pid reuse) must never get a signal: vm status
// calls the record stale, vm down removes it and kills nothing.
func TestStaleVMRecord(t *testing.T) {
	// The reproduction: `setsid sleep`, which execs sleep as a session leader.
	other := exec.Command("setsid", "sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	pid, state := other.Process.Pid, t.TempDir()
	record := fmt.Sprintf(`{"backend":"qemu","pid":%d,"ssh_port":1,"accel":"tcg","ident":"x","console_log":"/dev/null","started":"2025-01-01T00:00:00Z"}`, pid)
	writeFile(t, filepath.Join(state, "vm.json"), record)
	out, _, code := kwatchRun(t, "vm", "status", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "stale") || strings.Contains(out, "running for") {
		t.Fatalf("vm status: exit %d, %q; want the record called stale", code, out)
	}
	if _, err := os.Stat(filepath.Join(state, "vm.json")); err == nil {
		t.Error("vm status left the stale record behind")
	}
	writeFile(t, filepath.Join(state, "vm.json"), record)
	out, _, code = kwatchRun(t, "vm", "down", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "stale") || !strings.Contains(out, "signalled nothing") {
		t.Fatalf("vm down: exit %d, %q; want the record called stale", code, out)
	}
	if !proc.Alive(pid) {
		t.Fatal("vm down killed a process that was not its VM")
	}
	if _, err := os.Stat(filepath.Join(state, "vm.json")); err == nil {
		t.Error("vm down left the stale record behind")
	}
}

// vm status and vm down only look: run where there is no state dir, they
// create none.
func TestVMStatusCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"status", "down"} {
		cmd := exec.Command(kwatchBin, "vm", sub)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vm %s: %v\n%s", sub, err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, ".kwatch")); err == nil {
			t.Fatalf("vm %s created .kwatch in its working directory", sub)
		}
	}
}

// One kwatch per state dir: a second `vm up` while the first boots says who
// holds the state dir and starts no second QEMU.
func TestConcurrentVMUp(t *testing.T) {
	needGuest(t)
	state := filepath.Join(t.TempDir(), "state")
	first := exec.Command(kwatchBin, append([]string{"vm", "up"}, vmArgs(state)...)...)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	t.Cleanup(func() {
		first.Process.Signal(os.Interrupt)
		<-done
		kwatchRun(t, "vm", "down", "--state-dir", state)
		noStrayProcesses(t, state)
	})
	// vm.json is written as the console keeper starts, before its QEMU:
	// the first's QEMU must be there before the second is counted against it.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := os.Stat(filepath.Join(state, "vm.json"))
		if err == nil && len(strayProcesses(state)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first vm up started no VM within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, stderr, code := kwatchRun(t, append([]string{"vm", "up"}, vmArgs(state)...)...)
	want := fmt.Sprintf("another kwatch (pid %d) uses the state dir %s", first.Process.Pid, state)
	if code != 2 || !strings.Contains(stderr, want) {
		t.Fatalf("second vm up: exit %d, stderr %q; want 2 and %q", code, stderr, want)
	}
	if qemus := strayProcesses(state); len(qemus) != 1 {
		t.Fatalf("%d QEMU processes for one state dir: %v", len(qemus), qemus)
	}
}

// A SIGKILLed kwatch runs no cleanup, yet its build must go with it: make and
// the compiler jobs below it. The build here blocks in a recipe of the
// module's own Kbuild until it is killed.
func TestKilledKwatchLeavesNoBuild(t *testing.T) {
	needGuest(t)
	root := t.TempDir()
	dir := filepath.Join(root, "mod")
	writeModule(t, dir, "kwslow", 1)
	fifo := filepath.Join(root, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// An explicit rule beats Kbuild's pattern rule: compiling the object blocks on the fifo.
	writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := kwslow.o\n$(obj)/kwslow.o: FORCE\n\tcat "+fifo+" > $@; true\n")
	w := startWatch(t, append(vmArgs(e2eState), dir)...)
	w.next(3*time.Minute, "build_start")
	deadline := time.Now().Add(time.Minute)
	for !hasProcess(fifo) {
		if time.Now().After(deadline) {
			t.Fatalf("the build never reached its blocking recipe; stderr:\n%s", w.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.cmd.Process.Kill()
	<-w.done
	deadline = time.Now().Add(5 * time.Second)
	for hasProcess(root) {
		if time.Now().After(deadline) {
			t.Fatalf("the build outlived the SIGKILLed kwatch: %v", processesWith(root))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasProcess(needle string) bool { return len(processesWith(needle)) > 0 }

// processesWith lists the live processes whose command line mentions needle.
func processesWith(needle string) []string {
	var found []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		cmdline, err := os.ReadFile(p + "/cmdline")
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if err == nil && strings.Contains(cl, needle) {
			found = append(found, filepath.Base(p)+" "+cl)
		}
	}
	return found
}

// A kernel image cut short passes the header checks, and QEMU exits without
// a word: kwatch says that the kernel did not boot and names the image.
func TestTruncatedKernel(t *testing.T) {
	needGuest(t)
	img, err := os.ReadFile(e2eKernel)
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	writeFile(t, kernel, string(img[:len(img)/8]))
	state := filepath.Join(t.TempDir(), "state")
	args := vmArgs(state)
	args[3] = kernel // --kernel
	_, stderr, code := kwatchRun(t, append([]string{"vm", "up"}, args...)...)
	want := "the kernel " + kernel + " did not boot"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("vm up with a truncated kernel: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
	noStrayProcesses(t, state)
}

// kwatch init touches only what it writes: a refused init leaves nothing
// behind (no .kwatch, no key), --force keeps the user's .gitignore lines, and
// only init's files are staged in the git repository it creates.
func TestInitTouchesOnlyItsOwn(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	dir := filepath.Join(t.TempDir(), "mymod")
	writeFile(t, filepath.Join(dir, "flake.nix"), "mine\n")
	writeFile(t, filepath.Join(dir, ".gitignore"), "notes/\n")
	writeFile(t, filepath.Join(dir, "unrelated.txt"), "mine\n")
	if _, stderr, code := kwatchRun(t, "init", dir); code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("init over flake.nix: exit %d, %q; want 2 and a --force hint", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, ".kwatch")); err == nil {
		t.Fatal("a refused init left .kwatch behind")
	}
	if out, stderr, code := kwatchRun(t, "init", "--force", dir); code != 0 {
		t.Fatalf("init --force: exit %d\n%s%s", code, out, stderr)
	}
	ignore, _ := os.ReadFile(filepath.Join(dir, ".gitignore"))
	if !strings.HasPrefix(string(ignore), "notes/\n") || !strings.Contains(string(ignore), ".kwatch/") {
		t.Fatalf("init --force lost the user's .gitignore lines:\n%s", ignore)
	}
	staged, err := exec.Command("git", "-C", dir, "diff", "--cached", "--name-only").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(staged), "unrelated.txt") || !strings.Contains(string(staged), "flake.nix") {
		t.Fatalf("init staged %q; want its own files only", staged)
	}
	if ignore, _ := os.ReadFile(filepath.Join(dir, ".kwatch", ".gitignore")); !strings.Contains(string(ignore), "*\n") {
		t.Fatalf(".kwatch/.gitignore = %q, want *", ignore)
	}
}

// A flake outside git is copied whole into the world-readable nix store,
// .kwatch and its private key included: kwatch refuses to build it while its
// state dir lies in the flake, and says how to fix that.
func TestNixFlakeOutsideGit(t *testing.T) {
	nixtest.Need(t)
	nixtest.SetConfig()
	project := t.TempDir()
	nixtest.WriteFlake(t, project, nixtest.Flake{})
	nixtest.WriteModule(t, project)
	state := filepath.Join(project, ".kwatch")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	// As kwatch init leaves it: the key exists before the first run.
	_, pub, err := ssh.LoadOrCreateKey(state)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := kwatchRun(t, "--vm", "nix", "--nix-vm-attr", "packages.x86_64-linux.vm", "--accel", "tcg", "--once", project)
	if code != 2 || !strings.Contains(stderr, "is not in a git repository") || !strings.Contains(stderr, "git init && git add") {
		t.Fatalf("kwatch on a flake outside git: exit %d, stderr %q; want 2 and the fix", code, stderr)
	}
	copies, _ := filepath.Glob("/nix/store/*/.kwatch/id_ed25519.pub")
	for _, c := range copies {
		if b, _ := os.ReadFile(c); string(b) == string(pub) {
			t.Fatalf("kwatch's key reached the nix store: %s", c)
		}
	}
	noStrayProcesses(t, project)
}

// kwatch makes the qemu guest's host keys, so it pins exactly those: boots on
// new ports add nothing to known_hosts. With --vm ssh, a corrupt known_hosts
// line fails at once instead of being retried until the boot timeout.
func TestManagedVMHostKey(t *testing.T) {
	needGuest(t)
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() {
		kwatchRun(t, "vm", "down", "--state-dir", state)
		noStrayProcesses(t, state)
	})
	var ports []int
	for boot := 0; boot < 2; boot++ {
		if out, stderr, code := kwatchRun(t, append([]string{"vm", "up"}, vmArgs(state)...)...); code != 0 {
			t.Fatalf("vm up: exit %d\n%s%s", code, out, stderr)
		}
		guestRun(t, state, "true")
		st, _, err := vm.ReadState(state)
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, st.Port)
		if boot == 0 {
			if _, _, code := kwatchRun(t, "vm", "down", "--state-dir", state); code != 0 {
				t.Fatal("vm down failed")
			}
		}
	}
	if kh, err := os.ReadFile(filepath.Join(state, "known_hosts")); err == nil && len(kh) > 0 {
		t.Errorf("known_hosts grew over boots on ports %v:\n%s", ports, kh)
	}

	other := t.TempDir()
	writeFile(t, filepath.Join(other, "known_hosts"), "[127.0.0.1]:22 ssh-ed25519 not-base64!\n")
	start := time.Now()
	_, stderr, code := kwatchRun(t, "vm", "ssh", "--vm", "ssh", "--ssh", fmt.Sprintf("root@127.0.0.1:%d", ports[1]),
		"--identity", filepath.Join(state, "id_ed25519"), "--state-dir", other, "--", "true")
	if code == 0 || !strings.Contains(stderr, "fix or delete") || time.Since(start) > 10*time.Second {
		t.Fatalf("vm ssh with a corrupt known_hosts: exit %d after %s, stderr %q; want an immediate error", code, time.Since(start).Round(time.Second), stderr)
	}
}

// A state dir another user could have written is refused by every
// subcommand before anything in it is read, used or run (issue 17 item 2).
// Here one owned by another uid holds what that user would plant: a vm.json
// forged for a live process of ours (its start time and boot id are in
// /proc for anyone to read) and a gdb-follow. Nothing in it is used,
// nothing is signalled, nothing is added; the error says how to fix it.
func TestUnsafeStateDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making dirs and links of another uid needs root")
	}
	const other = 65534
	victim := exec.Command("setsid", "sleep", "600")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { victim.Process.Kill(); victim.Wait() }()
	id, err := proc.IdentityOf(victim.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	record, err := json.Marshal(vm.State{Kind: guest.QEMU, PID: victim.Process.Pid, Process: id, Port: 1, Accel: "tcg", Ident: "x", ConsoleLog: "/dev/null"})
	if err != nil {
		t.Fatal(err)
	}
	planted := func(dir string) string {
		writeFile(t, filepath.Join(dir, "vm.json"), string(record))
		writeFile(t, filepath.Join(dir, "gdb-follow"), "1\nshell touch "+filepath.Join(dir, "owned")+"\n")
		if err := os.Chown(dir, other, other); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	mod := t.TempDir()
	writeModule(t, mod, "kwunsafe", 1)
	nowhere := filepath.Join(t.TempDir(), "nope")
	theirs := planted(filepath.Join(t.TempDir(), "state"))
	// The default state dir, .kwatch in the working directory, is checked alike.
	cwd := filepath.Join(t.TempDir(), "proj")
	planted(filepath.Join(cwd, ".kwatch"))
	// Like /tmp: open to all but sticky and root's, so each entry stays its owner's.
	sticky := filepath.Join(t.TempDir(), "tmp")
	if err := errors.Join(os.Mkdir(sticky, 0o700), os.Chmod(sticky, 0o777|os.ModeSticky)); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(sticky, "demo")
	if err := errors.Join(os.Symlink(t.TempDir(), link), os.Lchown(link, other, other)); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := errors.Join(os.Mkdir(open, 0o700), os.Chmod(open, 0o777)); err != nil {
		t.Fatal(err)
	}
	qemu := func(state string) []string {
		return []string{"--vm", "qemu", "--kernel", nowhere, "--accel", "tcg", "--state-dir", state}
	}
	tests := []struct {
		name string
		args []string
		dir  string // the working directory, when not the test's
		want string // "" for success
	}{
		{"kwatch DIR", append(qemu(theirs), "--once", mod), "", "the state dir " + theirs + " belongs to uid 65534"},
		{"vm up", append([]string{"vm", "up"}, qemu(theirs)...), "", "belongs to uid 65534"},
		{"vm down", []string{"vm", "down", "--state-dir", theirs}, "", "belongs to uid 65534"},
		{"vm status", []string{"vm", "status", "--state-dir", theirs}, "", "belongs to uid 65534"},
		{"vm ssh", []string{"vm", "ssh", "--state-dir", theirs, "--", "true"}, "", "belongs to uid 65534"},
		{"gdb", []string{"gdb", "--state-dir", theirs, mod}, "", "belongs to uid 65534"},
		{"the default state dir", []string{"vm", "down"}, cwd, "the state dir " + filepath.Join(cwd, ".kwatch") + " belongs to uid 65534"},
		{"init", []string{"init", cwd}, "", "the state dir " + filepath.Join(cwd, ".kwatch") + " belongs to uid 65534"},
		{"another's link", []string{"vm", "status", "--state-dir", link}, "", link + ", on the way to the state dir, is a symlink owned by uid 65534"},
		{"in a dir open to all", []string{"vm", "status", "--state-dir", filepath.Join(open, "state")}, "", open + ", above the state dir, is writable by its group and others"},
		{"in a sticky dir", []string{"vm", "status", "--state-dir", filepath.Join(sticky, "mine")}, "", ""},
	}
	listing := func() string {
		var all []string
		for _, d := range []string{theirs, filepath.Join(cwd, ".kwatch"), cwd} {
			entries, _ := os.ReadDir(d)
			for _, e := range entries {
				all = append(all, filepath.Join(d, e.Name()))
			}
		}
		return strings.Join(all, " ")
	}
	before := listing()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, kwatchBin, tt.args...)
			cmd.Dir = tt.dir
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("exit %d (%v), stderr %q; want it accepted", code, err, stderr.String())
			case tt.want != "" && (code != 2 || !strings.HasPrefix(stderr.String(), "kwatch: error: ") || !strings.Contains(stderr.String(), tt.want) || !strings.Contains(stderr.String(), "kwatch: hint: ")):
				t.Errorf("exit %d, stderr %q; want exit 2, %q and a hint", code, stderr.String(), tt.want)
			}
			if !proc.Alive(victim.Process.Pid) {
				t.Fatal("kwatch signalled the process a planted vm.json named")
			}
			if after := listing(); after != before {
				t.Fatalf("the planted dirs changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// A closed terminal (SIGHUP) ends kwatch as ^C does: the last build
// settles, the upload dir leaves the guest with its record, and kwatch
// exits 0. Before, SIGHUP killed it on the spot and left both.
func TestHangupCleansUp(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeModule(t, dir, "kwhup", 1)
	w := startWatch(t, append(vmArgs(e2eState), dir)...)
	if evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed"); evs[len(evs)-1].Event != "loaded" {
		t.Fatalf("the module did not load: %+v\n%s", evs, w.stderr)
	}
	recordPath := filepath.Join(e2eState, "uploads.json")
	var record struct{ Dir string }
	if b, err := os.ReadFile(recordPath); err != nil || json.Unmarshal(b, &record) != nil || record.Dir == "" {
		t.Fatalf("no upload record while kwatch runs: %q, %v", b, err)
	}
	if err := w.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err != nil {
			t.Fatalf("kwatch ended with %v after SIGHUP, want exit 0 as after ^C; stderr:\n%s", err, w.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kwatch still runs 30s after SIGHUP")
	}
	if _, err := os.Stat(recordPath); err == nil {
		t.Error("the upload record outlived the SIGHUP")
	}
	if out := guestRun(t, e2eState, "ls -d "+record.Dir+" 2>/dev/null; true"); out != "" {
		t.Errorf("the upload dir %s is still in the guest", record.Dir)
	}
}

// A closed terminal hangs up kwatch gdb and gdb alike (the shell signals
// the job's process group): kwatch outlives it as it does ^C, waits for gdb,
// makes sure the guest runs and ends its session's record. Before, it died
// at once and left gdb.pid behind.
func TestGDBHangup(t *testing.T) {
	needGuest(t)
	// Signals are kwatch's and gdb's business, not the kernel's: the oldest
	// series is enough.
	v := e2eVMs[0]
	// A job of its own, as a shell starts it.
	g := startHoldingGDB(t, v, loadKwgdb(t, v), &syscall.SysProcAttr{Setpgid: true})
	pidFile := filepath.Join(e2eState, "gdb.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("no session record while gdb runs: %v", err)
	}
	if err := syscall.Kill(-g.cmd.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	code := g.wait(time.Minute)
	if ws := g.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("kwatch gdb died of %v:\n%s", ws.Signal(), g.output())
	}
	t.Logf("kwatch gdb exited %d after SIGHUP", code)
	if _, err := os.Stat(pidFile); err == nil {
		t.Error("gdb.pid outlived the session")
	}
	checkAlive(t, e2eState, "the hangup")
}

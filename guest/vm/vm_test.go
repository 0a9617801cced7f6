package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kwatch/guest"
	"kwatch/proc"
)

// shellVM is a "VM" that is just a shell script: enough to exercise the boot
// failure paths without paying for a real boot.
func shellVM(t *testing.T, script string) *Process {
	t.Helper()
	v := &Process{
		StateDir: filepath.Join(t.TempDir(), "state"),
		Kind:     guest.QEMU,
		Ident:    "test",
		Accel:    "tcg",
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			return exec.Command("sh", "-c", script), nil
		},
	}
	t.Cleanup(func() { v.Down() })
	return v
}

// consolePIDs returns the numbers printed as "pid N" on the console.
func consolePIDs(v *Process) []int {
	var pids []int
	for _, l := range v.ConsoleTail(100) {
		if n, ok := strings.CutPrefix(l, "pid "); ok {
			pid, _ := strconv.Atoi(n)
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestUpTimesOutAndStopsTheVM(t *testing.T) {
	v := shellVM(t, "echo pid $$; sleep 600 & echo pid $!; echo stuck in early boot; wait")
	_, err := v.Up(context.Background(), 5*time.Second)
	if err == nil {
		t.Fatal("Up succeeded without an SSH server")
	}
	lines := strings.Split(err.Error(), "\n")
	if lines[0] != "guest did not answer on SSH within 5s; last console lines:" || lines[len(lines)-1] != "stuck in early boot" {
		t.Fatalf("Up error = %q, want the timeout line and the console tail", err)
	}
	pids := consolePIDs(v)
	if len(pids) != 2 {
		t.Fatalf("console has pids %v, want the shell's and its child's", pids)
	}
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("process %d survived the failed boot", pid)
		}
	}
	if fi, err := os.Stat(v.StateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	if _, ok, err := ReadState(v.StateDir); ok || err != nil {
		t.Errorf("ReadState after the failed boot = %v, %v; want no state", ok, err)
	}
}

func TestUpReportsAVMThatExits(t *testing.T) {
	v := shellVM(t, "echo 'qemu-system-x86_64: -nic user: could not set up host forwarding rule' >&2; exit 3")
	_, err := v.Up(context.Background(), time.Minute)
	want := "the VM exited (exit status 3) before its SSH port answered; last console lines:\n" +
		"qemu-system-x86_64: -nic user: could not set up host forwarding rule"
	if err == nil || err.Error() != want {
		t.Fatalf("Up error = %v, want %q", err, want)
	}
}

func TestUpCancelled(t *testing.T) {
	v := shellVM(t, "echo pid $$; exec sleep 600")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(consolePIDs(v)) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := v.Up(ctx, time.Minute); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Up error = %v, want context canceled", err)
	}
	if pid := consolePIDs(v)[0]; proc.Alive(pid) {
		t.Errorf("VM process %d survived the cancelled boot", pid)
	}
}

func TestStatusAndDownWithoutVM(t *testing.T) {
	v := &Process{StateDir: t.TempDir()}
	if _, running, err := v.Status(); running || err != nil {
		t.Fatalf("Status = %v, %v; want not running", running, err)
	}
	if err := v.Down(); err != nil {
		t.Fatalf("Down without a VM: %v", err)
	}
	// A dead VM's leftover state is stale, not an error, and Down clears it.
	if err := writeState(v.StateDir, State{PID: 999999999, Port: 1}); err != nil {
		t.Fatal(err)
	}
	if st, running, err := v.Status(); running || err != nil || st.PID != 999999999 {
		t.Fatalf("Status of a dead VM = %+v, %v, %v", st, running, err)
	}
	if err := v.Down(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ReadState(v.StateDir); ok {
		t.Fatal("Down left vm.json behind")
	}
	if err := os.WriteFile(filepath.Join(v.StateDir, "vm.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadState(v.StateDir); err == nil || !strings.Contains(err.Error(), "delete") {
		t.Fatalf("ReadState of a corrupt file = %v, want an error saying what to delete", err)
	}
}

func TestConsoleTail(t *testing.T) {
	for _, tc := range []struct {
		log  string
		n    int
		want []string
	}{
		{"", 5, nil},
		{"a\r\nb\r\nc\r\n", 2, []string{"b", "c"}},
		{"a\nb", 5, []string{"a", "b"}},
		{strings.Repeat("x\n", consoleTailBytes) + "last\n", 1, []string{"last"}},
	} {
		v := &Process{StateDir: t.TempDir()}
		if err := os.WriteFile(v.consolePath(), []byte(tc.log), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := v.ConsoleTail(tc.n); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ConsoleTail(%d) of %.20q = %q, want %q", tc.n, tc.log, got, tc.want)
		}
	}
}

func TestResolveAccel(t *testing.T) {
	kvm := "tcg"
	if kvmUsable() {
		kvm = "kvm"
	}
	for _, tc := range []struct{ want, got, err string }{
		{want: "tcg", got: "tcg"},
		{want: "auto", got: kvm},
		{want: "", got: kvm},
		{want: "hvf", err: `unknown accel "hvf": use auto, kvm or tcg`},
	} {
		got, err := resolveAccel(tc.want)
		if got != tc.got || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("resolveAccel(%q) = %q, %v; want %q, %q", tc.want, got, err, tc.got, tc.err)
		}
	}
	got, err := resolveAccel("kvm")
	if kvm == "kvm" && (got != "kvm" || err != nil) ||
		kvm == "tcg" && (err == nil || err.Error() != "kvm requested but /dev/kvm is not usable: use --accel tcg") {
		t.Errorf("resolveAccel(kvm) = %q, %v", got, err)
	}
}

// A KVM guest that hangs before printing anything must not hang kwatch:
// "auto" gives up on it after kvmSilence and boots again with TCG.
func TestAutoFallsBackWhenKVMIsSilent(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the kvm silence limit")
	}
	if !kvmUsable() {
		t.Skip("auto only tries KVM when /dev/kvm is usable")
	}
	var accels []string
	v := shellVM(t, "")
	v.Accel = "auto"
	v.Launch = func(port int, accel string) (*exec.Cmd, error) {
		accels = append(accels, accel)
		if accel == "kvm" {
			return exec.Command("sh", "-c", "echo pid $$ >"+filepath.Join(v.StateDir, "kvm.pid")+"; exec sleep 600"), nil
		}
		return exec.Command("sh", "-c", "echo tcg booted; exit 3"), nil
	}
	var notices []string
	v.Notify = func(msg string) { notices = append(notices, msg) }
	_, err := v.Up(context.Background(), time.Minute)
	if err == nil || err.Error() != "the VM exited (exit status 3) before its SSH port answered; last console lines:\ntcg booted" {
		t.Fatalf("Up error = %v, want the TCG boot's exit", err)
	}
	if !reflect.DeepEqual(accels, []string{"kvm", "tcg"}) {
		t.Errorf("launched with %v, want kvm then tcg", accels)
	}
	if !reflect.DeepEqual(notices, []string{
		"booting the VM (qemu, accel kvm); waiting for its SSH server",
		"kvm: guest printed nothing in 15s, falling back to tcg",
		"booting the VM (qemu, accel tcg); waiting for its SSH server",
	}) {
		t.Errorf("notices = %q", notices)
	}
	b, _ := os.ReadFile(filepath.Join(v.StateDir, "kvm.pid"))
	if pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b), "pid "))); pid == 0 || proc.Alive(pid) {
		t.Errorf("the silent KVM VM (pid %q) was not stopped", b)
	}
}

// A record kwatch cannot prove is its VM is stale: Status does not call it
// running and Down removes it without signalling anything. The stand-in for
// the unrelated process leads its own session, as the VM does, which is all
// kwatch used to check.
func TestStaleRecordIsNeverSignalled(t *testing.T) {
	other := exec.Command("sleep", "600")
	other.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	pid := other.Process.Pid
	id, err := proc.IdentityOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   proc.Identity
	}{
		{"record without identity", proc.Identity{}},
		{"pid recycled", proc.Identity{BootID: id.BootID, StartTime: id.StartTime - 1}},
		{"machine rebooted", proc.Identity{BootID: "another-boot", StartTime: id.StartTime}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &Process{StateDir: t.TempDir()}
			if err := writeState(v.StateDir, State{Kind: guest.QEMU, PID: pid, Process: tc.id, Port: 1}); err != nil {
				t.Fatal(err)
			}
			if _, running, err := v.Status(); running || err != nil {
				t.Fatalf("Status = running %v, %v; want a stale record", running, err)
			}
			if err := v.Down(); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := ReadState(v.StateDir); ok {
				t.Error("Down left the stale record behind")
			}
			if !proc.Alive(pid) {
				t.Fatal("Down killed a process that is not its VM")
			}
		})
	}
	// The true identity is proof: then the process is the VM, and Down stops it.
	v := &Process{StateDir: t.TempDir()}
	if err := writeState(v.StateDir, State{Kind: guest.QEMU, PID: pid, Process: id, Port: 1}); err != nil {
		t.Fatal(err)
	}
	if _, running, _ := v.Status(); !running {
		t.Fatalf("Status does not recognise the recorded process: %v", Verify(State{PID: pid, Process: id}))
	}
	if err := v.Down(); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(pid) {
		t.Fatal("Down did not stop the proven VM")
	}
}

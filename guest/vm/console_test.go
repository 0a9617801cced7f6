package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"kwatch/guest"
	"kwatch/proc"
)

// The console log stays capped while the VM runs, also after the kwatch that
// booted it exited: a guest printing without end cannot fill the disk. The
// log is rotated: console.log holds the newest output, console.log.1 what
// came before it.
func TestConsoleLogCapped(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { (&Process{StateDir: state}).Down() })
	owner := exec.Command(os.Args[0], "-test.run=^TestHelperOwner$")
	owner.Env = append(os.Environ(), "KWATCH_TEST_OWNER_STATE="+state)
	if out, err := owner.CombinedOutput(); err != nil {
		t.Fatalf("the kwatch stand-in did not boot the VM: %v\n%s", err, out)
	}
	st, running, err := (&Process{StateDir: state}).Status()
	if !running {
		t.Fatalf("the VM does not run after its kwatch exited: %+v, %v", st, err)
	}
	// The stand-in VM prints about 10 MB a second; wait until it printed
	// three logs' worth since its kwatch exited.
	log := filepath.Join(state, "console.log")
	first := lastLine(t, log)
	for deadline := time.Now().Add(time.Minute); lastLine(t, log)-first < 3*consoleLimit/standinLine; {
		if time.Now().After(deadline) {
			t.Fatalf("the console log got only to line %d from %d", lastLine(t, log), first)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range []string{"console.log", "console.log.1"} {
		if fi, err := os.Stat(filepath.Join(state, name)); err != nil || fi.Size() > consoleLimit {
			t.Errorf("%s: %v, want at most %d bytes", name, err, int64(consoleLimit))
		}
	}
	if logs, _ := filepath.Glob(log + "*"); len(logs) != 2 {
		t.Errorf("console logs %q, want console.log and console.log.1", logs)
	}
	if err := (&Process{StateDir: state}).Down(); err != nil {
		t.Fatal(err)
	}
	if proc.GroupAlive(st.PID) {
		t.Errorf("the VM's processes (group %d) outlived vm down", st.PID)
	}
}

// standinLine is the length of a line the stand-in VM prints.
const standinLine = 120

var lineRe = regexp.MustCompile(`(?m)^line (\d+) x+$`)

// lastLine returns the number of the last whole line in the console log at
// path; 0 when there is none.
func lastLine(t *testing.T, path string) int64 {
	f, err := os.Open(path)
	for i := 0; errors.Is(err, fs.ErrNotExist) && i < 2000; i++ {
		time.Sleep(time.Millisecond) // between a rotation's rename and the new log
		f, err = os.Open(path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 4096 {
		f.Seek(-4096, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	m := lineRe.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(string(m[len(m)-1][1]), 10, 64)
	return n
}

// TestHelperOwner is not a test: it is the kwatch that TestConsoleLogCapped
// runs, which boots the stand-in VM and exits.
func TestHelperOwner(t *testing.T) {
	state := os.Getenv("KWATCH_TEST_OWNER_STATE")
	if state == "" {
		t.Skip("the kwatch stand-in of TestConsoleLogCapped")
	}
	if _, err := standinVM(state, true).Up(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
}

// standinVM is a VM that runs TestHelperVM, which prints without end if flood.
func standinVM(state string, flood bool) *Process {
	return &Process{StateDir: state, Kind: guest.QEMU, Ident: "standin", Accel: "tcg",
		Launch: func(port int, accel string) (*exec.Cmd, error) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperVM$", "-test.timeout=5m")
			cmd.Env = append(os.Environ(), "KWATCH_TEST_OWNER_STATE=", "KWATCH_TEST_VM_PORT="+strconv.Itoa(port),
				"KWATCH_TEST_VM_FLOOD="+strconv.FormatBool(flood))
			return cmd, nil
		}}
}

// A VM an older kwatch started writes its console log itself, without a cap:
// it is restarted once, with a notice.
func TestOlderVMRestarted(t *testing.T) {
	v := standinVM(filepath.Join(t.TempDir(), "state"), false)
	t.Cleanup(func() { v.Down() })
	var notices []string
	v.Notify = func(msg string) { notices = append(notices, msg) }
	st, err := v.Up(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	older := st
	older.ConsoleCap = 0
	if err := writeState(v.StateDir, older); err != nil {
		t.Fatal(err)
	}
	again, err := v.Up(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if again.PID == st.PID || proc.Alive(st.PID) {
		t.Errorf("the older VM (pid %d) was kept (now pid %d)", st.PID, again.PID)
	}
	if !slices.Contains(notices, "the VM was started by an older kwatch, whose console log grows without limit: restarting it once") {
		t.Errorf("notices %q do not say why the VM was restarted", notices)
	}
	if third, err := v.Up(context.Background(), time.Minute); err != nil || third.PID != again.PID {
		t.Errorf("a VM with a capped log was restarted: pid %d, was %d (%v)", third.PID, again.PID, err)
	}
}

// TestHelperVM is not a test: it is the VM of standinVM. It answers on its
// SSH port as a guest does and, asked to, prints numbered lines on its
// console without end.
func TestHelperVM(t *testing.T) {
	port := os.Getenv("KWATCH_TEST_VM_PORT")
	if port == "" {
		t.Skip("the stand-in VM of TestConsoleLogCapped")
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-standin\r\n"))
			c.Close()
		}
	}()
	if os.Getenv("KWATCH_TEST_VM_FLOOD") != "true" {
		select {}
	}
	var b bytes.Buffer
	for i := 1; ; i++ {
		line := fmt.Sprintf("line %d ", i)
		b.WriteString(line + strings.Repeat("x", standinLine-len(line)-1) + "\n")
		if i%1000 == 0 {
			os.Stdout.Write(b.Bytes())
			b.Reset()
			time.Sleep(10 * time.Millisecond)
		}
	}
}

package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeDevice writes a C module with a misc device /dev/NAME whose read()
// gives "NAME fact VERSION"; with stuck, read() never advances *ppos (a
// common beginner's bug), so `cat /dev/NAME` prints it without end.
func writeDevice(t *testing.T, dir, name string, version int, stuck bool) {
	t.Helper()
	ppos := "ppos"
	if stuck {
		ppos = "&pos"
	}
	src := fmt.Sprintf(`#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
static const char fact[] = "%[1]s fact %[2]d\n";
static ssize_t dev_read(struct file *f, char __user *buf, size_t n, loff_t *ppos)
{
	loff_t pos = *ppos;
	return simple_read_from_buffer(buf, n, %[3]s, fact, sizeof(fact) - 1);
}
static const struct file_operations fops = { .owner = THIS_MODULE, .read = dev_read };
static struct miscdevice dev = { .minor = MISC_DYNAMIC_MINOR, .name = "%[1]s", .fops = &fops };
static int __init m_init(void) { return misc_register(&dev); }
static void __exit m_exit(void) { misc_deregister(&dev); }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("%[2]d");
`, name, version, ppos)
	writeFile(t, filepath.Join(dir, name+".c"), src)
	writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := "+name+".o\n")
}

// Issue 17 item 4: `--run 'cat /dev/X'` on a read() that never advances
// *ppos runs forever. A save stops it, with its processes in the guest, and
// the fix is built and loaded; the stopped command's output is kept capped.
// Before, kwatch waited for the command forever, ignoring every save.
func TestRunStoppedBySaveInGuest(t *testing.T) {
	needGuest(t)
	dir := t.TempDir()
	writeDevice(t, dir, "kwstuck", 1, true)
	w := startWatch(t, append(vmArgs(e2eState), "--run", "cat /dev/kwstuck", dir)...)
	evs := w.next(3*time.Minute, "loaded", "load_failed", "build_failed")
	if last := evs[len(evs)-1]; last.Event != "loaded" {
		t.Fatalf("first cycle ended with %+v", last)
	}
	// The command's processes ([c]: not this grep's own shell).
	cats := func() string {
		return strings.TrimSpace(guestRun(t, e2eState, "ps -o pid,args | grep '[c]at /dev/kwstuck' || true"))
	}
	// The save comes once the command has written well past the 64 KiB
	// kept of its output, however slowly the guest runs it.
	written := func() int {
		out := guestRun(t, e2eState, "for p in $(ps -o pid,args | grep '[c]at /dev/kwstuck' | awk '{print $1}'); do cat /proc/$p/io; done 2>/dev/null | "+
			"awk '/^wchar/ && $2 > n {n = $2} END {print n + 0}'")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	for deadline := time.Now().Add(time.Minute); written() < 256<<10; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the --run command wrote %d bytes in a minute (running: %q)", written(), cats())
		}
	}

	writeDevice(t, dir, "kwstuck", 2, false)
	evs = w.next(2*time.Minute, "run_output")
	stopped := evs[len(evs)-1]
	if stopped.Exit != nil || stopped.Message != "stopped by a new save" ||
		!strings.HasPrefix(stopped.Output, "kwstuck fact 1\n") || !strings.Contains(stopped.Output, " bytes cut ...]\n") ||
		len(stopped.Output) > 70<<10 {
		t.Errorf("the stuck command ended with exit %v, %q and %d bytes of output (%.60q); want it stopped by the save, its output capped",
			stopped.Exit, stopped.Message, len(stopped.Output), stopped.Output)
	}
	evs = w.next(2*time.Minute, "loaded", "load_failed", "build_failed")
	if last := evs[len(evs)-1]; last.Event != "loaded" {
		t.Fatalf("the fix ended with %+v", last)
	}
	evs = w.next(time.Minute, "run_output")
	if e := evs[len(evs)-1]; e.Exit == nil || *e.Exit != 0 || e.Output != "kwstuck fact 2\n" {
		t.Errorf("the fixed module's --run: exit %v, %q, output %q; want exit 0 and one fact", e.Exit, e.Message, e.Output)
	}
	if got := strings.TrimSpace(guestRun(t, e2eState, "cat /sys/module/kwstuck/version")); got != "2" {
		t.Errorf("the guest runs version %q, want the fix, 2", got)
	}
	if left := cats(); left != "" {
		t.Errorf("the stopped command still runs in the guest (pids %s)", left)
	}
	w.stop()
	guestRun(t, e2eState, "rmmod kwstuck")
	noStrayProcesses(t, dir)
}

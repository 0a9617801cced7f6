package watcher

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// testQuiet is short, but generous enough that a loaded machine does not
// split the few syscalls of one simulated editor save into two batches.
const testQuiet = 100 * time.Millisecond

// batchTimeout bounds every wait for a batch; it is a hang guard, not a speed goal.
const batchTimeout = 10 * time.Second

func newWatcher(t *testing.T, root string, opts Options) *Watcher {
	t.Helper()
	if opts.Quiet == 0 {
		opts.Quiet = testQuiet
	}
	if opts.Settle == 0 {
		opts.Settle = testQuiet
	}
	w, err := New(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// writeFile writes name, creating its directory if needed.
func writeFile(t *testing.T, name, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(name))
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func nextBatch(t *testing.T, w *Watcher) Batch {
	t.Helper()
	select {
	case b, ok := <-w.Batches():
		if !ok {
			t.Fatal("Batches closed")
		}
		return b
	case <-time.After(batchTimeout):
		t.Fatal("no batch")
	}
	return Batch{}
}

func expectBatch(t *testing.T, w *Watcher, want Batch) {
	t.Helper()
	if got := nextBatch(t, w); !reflect.DeepEqual(got, want) {
		t.Fatalf("batch = %+v, want %+v", got, want)
	}
}

var markers atomic.Int64

// expectOnlyMarker writes a fresh input file and expects a batch with just
// that file: any change that leaked out of earlier steps would show up first
// or inside it.
func expectOnlyMarker(t *testing.T, w *Watcher, root string) {
	t.Helper()
	name := fmt.Sprintf("zz-marker-%d.c", markers.Add(1))
	writeFile(t, filepath.Join(root, name), "")
	expectBatch(t, w, Batch{Changed: []string{name}})
}

// TestSaveSequences replays the event sequences that editors and tools
// produce on a save (measured in docs/watching-and-style.md §1.8); each
// must give exactly one batch naming the saved file.
func TestSaveSequences(t *testing.T) {
	tests := []struct {
		name string
		save func(t *testing.T, dir string)
	}{
		{"vim rename-over", func(t *testing.T, dir string) {
			x := filepath.Join(dir, "x.c")
			writeFile(t, filepath.Join(dir, "4913"), "")
			must(t, os.Remove(filepath.Join(dir, "4913")))
			must(t, os.Rename(x, x+"~"))
			writeFile(t, x, "int v2;\n")
			must(t, os.Remove(x+"~"))
		}},
		{"jetbrains safe-write", func(t *testing.T, dir string) {
			x := filepath.Join(dir, "x.c")
			writeFile(t, x+"___jb_tmp___", "int v2;\n")
			must(t, os.Rename(x, x+"___jb_old___"))
			must(t, os.Rename(x+"___jb_tmp___", x))
			must(t, os.Remove(x+"___jb_old___"))
		}},
		{"sed -i", func(t *testing.T, dir string) {
			tmp := filepath.Join(dir, "sedAbC123")
			writeFile(t, tmp, "int v2;\n")
			must(t, os.Rename(tmp, filepath.Join(dir, "x.c")))
		}},
		{"os.WriteFile", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "x.c"), "int v2;\n")
		}},
		{"emacs lock and backup", func(t *testing.T, dir string) {
			x := filepath.Join(dir, "x.c")
			must(t, os.Symlink("user@host.1234", filepath.Join(dir, ".#x.c")))
			writeFile(t, filepath.Join(dir, "#x.c#"), "int v2;\n")
			must(t, os.Rename(x, x+"~"))
			writeFile(t, x, "int v2;\n")
			must(t, os.Remove(filepath.Join(dir, "#x.c#")))
			must(t, os.Remove(filepath.Join(dir, ".#x.c")))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "x.c"), "int v1;\n")
			w := newWatcher(t, root, Options{})
			tt.save(t, root)
			expectBatch(t, w, Batch{Changed: []string{"x.c"}})
			expectOnlyMarker(t, w, root)
		})
	}
}

// TestCompleteSaveEndsWait checks that a batch closes as soon as its files
// are complete, with no quiet period: Quiet and MaxWait are an hour here, so
// only a completed save can close a batch before the hang guard fires. Once
// it has, nothing of the save may be left for another batch.
func TestCompleteSaveEndsWait(t *testing.T) {
	tests := []struct {
		name string
		save func(t *testing.T, dir string)
		want []string
	}{
		{"write and close", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "x.c"), "int v2;\n")
		}, []string{"x.c"}},
		{"rename over", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "x.c.tmp"), "int v2;\n")
			must(t, os.Rename(filepath.Join(dir, "x.c.tmp"), filepath.Join(dir, "x.c")))
		}, []string{"x.c"}},
		{"vim rename-over", func(t *testing.T, dir string) {
			x := filepath.Join(dir, "x.c")
			must(t, os.Rename(x, x+"~"))
			writeFile(t, x, "int v2;\n")
			must(t, os.Remove(x+"~"))
		}, []string{"x.c"}},
		{"touch", func(t *testing.T, dir string) {
			if out, err := exec.Command("touch", filepath.Join(dir, "x.c")).CombinedOutput(); err != nil {
				t.Fatalf("touch: %v: %s", err, out)
			}
		}, []string{"x.c"}},
		{"burst", func(t *testing.T, dir string) {
			for _, name := range []string{"a.c", "b.h", "x.c"} {
				writeFile(t, filepath.Join(dir, name), "int v2;\n")
			}
		}, []string{"a.c", "b.h", "x.c"}},
		{"one file still open", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "x.c"), os.O_WRONLY|os.O_TRUNC, 0)
			must(t, err)
			_, err = f.WriteString("int v2;\n")
			must(t, err)
			writeFile(t, filepath.Join(dir, "a.c"), "int a;\n")
			time.Sleep(3 * testQuiet) // a batch closing on a.c alone would be out by now
			must(t, f.Close())
		}, []string{"a.c", "x.c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "x.c"), "int v1;\n")
			w := newWatcher(t, root, Options{Quiet: time.Hour, MaxWait: time.Hour})
			tt.save(t, root)
			expectBatch(t, w, Batch{Changed: tt.want})
			must(t, w.Close())
			for b := range w.Batches() {
				t.Errorf("another batch: %+v", b)
			}
			if len(w.pending) > 0 {
				t.Errorf("left pending: %v", w.pending)
			}
		})
	}
}

// TestSaveStorm checks that saves coming faster than the quiet period are
// one batch after the first: the first save's build starts at once, the
// rest wait for the storm to end. The saves are further apart than Settle,
// so each would be a batch of its own without the burst rule.
func TestSaveStorm(t *testing.T) {
	root := t.TempDir()
	x := filepath.Join(root, "x.c")
	writeFile(t, x, "int v0;\n")
	w := newWatcher(t, root, Options{Quiet: 500 * time.Millisecond, Settle: 20 * time.Millisecond, MaxWait: time.Minute})
	writeFile(t, x, "int v1;\n")
	expectBatch(t, w, Batch{Changed: []string{"x.c"}})
	// Read as the storm goes, so that batches are not merged for a slow reader.
	got := make(chan Batch, 100)
	go func() {
		for b := range w.Batches() {
			got <- b
		}
	}()
	for i := 2; i <= 10; i++ {
		writeFile(t, x, fmt.Sprintf("int v%d;\n", i))
		time.Sleep(60 * time.Millisecond)
	}
	next := func(want Batch) {
		t.Helper()
		select {
		case b := <-got:
			if !reflect.DeepEqual(b, want) {
				t.Fatalf("batch = %+v, want %+v", b, want)
			}
		case <-time.After(batchTimeout):
			t.Fatal("no batch")
		}
	}
	next(Batch{Changed: []string{"x.c"}})
	writeFile(t, filepath.Join(root, "marker.c"), "")
	next(Batch{Changed: []string{"marker.c"}})
}

func TestNewDirectories(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, Options{})

	// inotify reports only "CREATE a" for this.
	mkdir(t, filepath.Join(root, "a/b/c"))
	writeFile(t, filepath.Join(root, "a/b/c/new.c"), "")
	expectBatch(t, w, Batch{Changed: []string{"a/b/c/new.c"}})

	// The new directories are watched.
	writeFile(t, filepath.Join(root, "a/b/c/new.c"), "int x;\n")
	writeFile(t, filepath.Join(root, "a/b/other.h"), "")
	expectBatch(t, w, Batch{Changed: []string{"a/b/c/new.c", "a/b/other.h"}})

	// A directory moved in with files already inside.
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "d/Kbuild"), "")
	writeFile(t, filepath.Join(src, "d/e/y.c"), "")
	writeFile(t, filepath.Join(src, "d/e/y.o"), "")
	must(t, os.Rename(filepath.Join(src, "d"), filepath.Join(root, "d")))
	expectBatch(t, w, Batch{Changed: []string{"d/Kbuild", "d/e/y.c"}})
	writeFile(t, filepath.Join(root, "d/e/y.c"), "int y;\n")
	expectBatch(t, w, Batch{Changed: []string{"d/e/y.c"}})
	expectOnlyMarker(t, w, root)
}

// TestWalkHoldsBatch moves in a tree that takes far longer to walk than the
// quiet period: the batch must wait for the walk instead of closing without
// the files found by it.
func TestWalkHoldsBatch(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, Options{Quiet: 20 * time.Millisecond, MaxWait: time.Minute})
	src := t.TempDir()
	want := []string{"x.c"}
	for i := range 1000 {
		name := fmt.Sprintf("big/d%04d/f.c", i)
		writeFile(t, filepath.Join(src, name), "")
		want = append(want, name)
	}
	must(t, os.Rename(filepath.Join(src, "big"), filepath.Join(root, "big")))
	writeFile(t, filepath.Join(root, "x.c"), "")
	slices.Sort(want)
	expectBatch(t, w, Batch{Changed: want})
	expectOnlyMarker(t, w, root)
}

func TestDirectoryRenamed(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "sub/inner/x.c"), "")
	writeFile(t, filepath.Join(root, "sub/y.h"), "")
	w := newWatcher(t, root, Options{})

	must(t, os.Rename(filepath.Join(root, "sub"), filepath.Join(root, "moved")))
	expectBatch(t, w, Batch{
		Changed: []string{"moved/inner/x.c", "moved/y.h"},
		Removed: []string{"sub/inner/x.c", "sub/y.h"},
	})
	// inotify keeps the old watch on moved/inner; events there must not come
	// back under the old name.
	writeFile(t, filepath.Join(root, "moved/inner/x.c"), "int x;\n")
	expectBatch(t, w, Batch{Changed: []string{"moved/inner/x.c"}})

	// Moved out of the tree: its files are gone, and edits there are not ours.
	outside := filepath.Join(t.TempDir(), "out")
	must(t, os.Rename(filepath.Join(root, "moved"), outside))
	expectBatch(t, w, Batch{Removed: []string{"moved/inner/x.c", "moved/y.h"}})
	writeFile(t, filepath.Join(outside, "inner/x.c"), "int z;\n")
	expectOnlyMarker(t, w, root)

	// Removed outright.
	writeFile(t, filepath.Join(root, "gone/z.c"), "")
	expectBatch(t, w, Batch{Changed: []string{"gone/z.c"}})
	must(t, os.RemoveAll(filepath.Join(root, "gone")))
	expectBatch(t, w, Batch{Removed: []string{"gone/z.c"}})
	expectOnlyMarker(t, w, root)
}

func TestBurstIsOneBatch(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, Options{Quiet: 250 * time.Millisecond, MaxWait: time.Minute})
	var want []string
	for i := range 200 {
		name := fmt.Sprintf("f%03d.c", i)
		writeFile(t, filepath.Join(root, name), "int x;\n")
		want = append(want, name)
	}
	expectBatch(t, w, Batch{Changed: want})
	expectOnlyMarker(t, w, root)
}

// TestMaxWait checks that a steady stream of changes, never quiet for
// long enough, still produces batches.
func TestMaxWait(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, Options{Quiet: 50 * time.Millisecond, MaxWait: 300 * time.Millisecond})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := os.WriteFile(filepath.Join(root, "x.c"), []byte(fmt.Sprint(i)), 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	timeout := time.After(2 * time.Second)
	batches := 0
loop:
	for {
		select {
		case <-w.Batches():
			batches++
		case <-timeout:
			break loop
		}
	}
	close(stop)
	<-done
	if batches < 3 {
		t.Errorf("%d batches during 2s of writes every 10ms, want at least 3 (MaxWait 300ms)", batches)
	}
}

func TestKbuildOutputsIgnored(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "x.c"), "")
	w := newWatcher(t, root, Options{})
	for _, name := range []string{"x.o", ".x.o.cmd", "x.ko", ".x.ko.cmd", "modules.order", "Module.symvers",
		"x.mod", "x.mod.c", "x.mod.o", ".x.mod.o.cmd", "libx.rmeta", "rust-project.json", ".tmp_versions/x.mod"} {
		writeFile(t, filepath.Join(root, name), "output")
	}
	expectOnlyMarker(t, w, root)
}

func TestRemoved(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "x.c"), "")
	writeFile(t, filepath.Join(root, "x.h"), "")
	w := newWatcher(t, root, Options{})
	must(t, os.Remove(filepath.Join(root, "x.c")))
	expectBatch(t, w, Batch{Removed: []string{"x.c"}})
	expectOnlyMarker(t, w, root)
}

// TestTouchAndChmod checks that touch(1), which inotify reports as a bare
// attribute change, counts as a change, while chmod does not.
func TestTouchAndChmod(t *testing.T) {
	root := t.TempDir()
	x := filepath.Join(root, "x.c")
	writeFile(t, x, "")
	old := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(x, old, old))
	w := newWatcher(t, root, Options{})

	must(t, os.Chmod(x, 0o600))
	expectOnlyMarker(t, w, root)

	now := time.Now()
	must(t, os.Chtimes(x, now, now))
	expectBatch(t, w, Batch{Changed: []string{"x.c"}})
	expectOnlyMarker(t, w, root)

	// A mode change right after a save (vim sets it after closing the
	// file) is not a second change.
	writeFile(t, x, "int v2;\n")
	expectBatch(t, w, Batch{Changed: []string{"x.c"}})
	must(t, os.Chmod(x, 0o644))
	expectOnlyMarker(t, w, root)
}

// TestSlowConsumer checks that batches closed while nobody reads are merged,
// and that the watcher keeps draining meanwhile.
func TestSlowConsumer(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "gone.c"), "")
	w := newWatcher(t, root, Options{Quiet: 30 * time.Millisecond})
	writeFile(t, filepath.Join(root, "a.c"), "")
	writeFile(t, filepath.Join(root, "b.c"), "")
	time.Sleep(300 * time.Millisecond) // the first batch closes unread
	writeFile(t, filepath.Join(root, "b.c"), "int b;\n")
	must(t, os.Remove(filepath.Join(root, "gone.c")))
	writeFile(t, filepath.Join(root, "c.c"), "")
	time.Sleep(300 * time.Millisecond)
	expectBatch(t, w, Batch{Changed: []string{"a.c", "b.c", "c.c"}, Removed: []string{"gone.c"}})
	expectOnlyMarker(t, w, root)
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	root := t.TempDir()
	w, err := New(root, Options{Quiet: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(root, "a/b"))
	writeFile(t, filepath.Join(root, "a/b/x.c"), "")
	nextBatch(t, w)
	writeFile(t, filepath.Join(root, "y.c"), "") // left pending: Close must not wait for it
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for range w.Batches() {
	}
	for range w.Errors() {
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestCloseWhileIdle checks that Close ends the readers of both inotify
// instances when no event is coming to wake them.
func TestCloseWhileIdle(t *testing.T) {
	w, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the readers are waiting for events
	closed := make(chan error)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(batchTimeout):
		t.Fatal("Close hangs")
	}
}

func TestNewErrors(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "file.c"), "")
	tests := []struct {
		root, want string
	}{
		{filepath.Join(root, "missing"), "no such file or directory"},
		{filepath.Join(root, "file.c"), "not a directory"},
	}
	for _, tt := range tests {
		_, err := New(tt.root, Options{})
		if want := "watching " + tt.root + ": " + tt.want; err == nil || err.Error() != want {
			t.Errorf("New error = %v, want %q", err, want)
		}
	}
}

// BenchmarkWatchSetup measures New and Close on a tree of 2,040 directories
// and 20,000 files, about the size of a large out-of-tree driver with a
// vendored library.
func BenchmarkWatchSetup(b *testing.B) {
	root := b.TempDir()
	for i := range 40 {
		for j := range 50 {
			dir := filepath.Join(root, fmt.Sprintf("d%02d/s%02d", i, j))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			for k := range 10 {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.c", k)), nil, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	for b.Loop() {
		w, err := New(root, Options{})
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

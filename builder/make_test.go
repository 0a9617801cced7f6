package builder

import (
	"context"
	"errors"
	"kwatch/makelog"
	"kwatch/replay"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// obj-m := a.o b.o builds two modules: the first is loaded unless --module
// names another, and a name it does not build is a clear error.
func TestBuiltModuleChoice(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"kw-a.ko", "kw_b.ko"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.order"), []byte("kw-a.o\nkw_b.o\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		want, ko, err string
	}{
		{"", "kw-a.ko", ""},
		{"kw_b", "kw_b.ko", ""},
		{"kw-b", "kw_b.ko", ""},
		{"kw_a", "kw-a.ko", ""},
		{"kw_c", "", "--module kw_c: obj-m does not build it (modules.order names kw-a, kw_b)"},
	}
	for _, tt := range tests {
		ko, all, err := builtModule(dir, tt.want)
		if tt.err != "" {
			var be *Error
			if !errors.As(err, &be) || err.Error() != "build failed: "+tt.err || !strings.Contains(be.Fix, "kw-a, kw_b") {
				t.Errorf("builtModule(%q) error = %v, want %q with a hint naming both", tt.want, err, tt.err)
			}
			continue
		}
		if err != nil || filepath.Base(ko) != tt.ko || !slices.Equal(all, []string{"kw-a", "kw_b"}) {
			t.Errorf("builtModule(%q) = %s, %q, %v; want %s and both modules", tt.want, ko, all, err, tt.ko)
		}
	}
}

func TestArgValue(t *testing.T) {
	tests := []struct {
		args []string
		name string
		want string
	}{
		{[]string{"-C", "/k", "M=/m", "RUSTC=/usr/bin/rustc", "HOSTRUSTC=x"}, "RUSTC=", "/usr/bin/rustc"},
		{[]string{"RUSTC=a", "RUSTC=b"}, "RUSTC=", "b"}, // make: the last assignment wins
		{[]string{"HOSTRUSTC=x"}, "RUSTC=", "def"},
		{[]string{"-C", "/k", "modules"}, "-C", "/k"},
		{[]string{"-C/k"}, "-C", "/k"},
		{[]string{"modules", "-C"}, "-C", "def"},
	}
	for _, tt := range tests {
		if got := argValue(tt.args, tt.name, "def"); got != tt.want {
			t.Errorf("argValue(%q, %q) = %q, want %q", tt.args, tt.name, got, tt.want)
		}
	}
}

// syncBuffer is a build log that the test reads while the build writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRecords lays out what Kbuild leaves after building hello.ko from src
// (hello.c or hello.rs), which includes ../inc/x.h, in root/mod against the
// kernel build dir root/kernel, whose scripts/Makefile.build has a
// rust-analyzer target as Kbuild's; it returns the module dir and what make
// ran.
func fakeRecords(t *testing.T, src string) (dir string, rec *replay.Recording) {
	t.Helper()
	root := t.TempDir()
	dir, kernel := filepath.Join(root, "mod"), filepath.Join(root, "kernel")
	for name, content := range map[string]string{
		"mod/" + src:                    "#include \"../inc/x.h\"\n",
		"mod/modules.order":             "DIR/hello.ko\n",
		"mod/hello.mod":                 "DIR/hello.o\n",
		"mod/.hello.o.cmd":              "cmd_DIR/hello.o := gcc -I../inc -c -o DIR/hello.o DIR/" + src + "\n\nsource_DIR/hello.o := DIR/" + src + "\n\ndeps_DIR/hello.o := \\\n  DIR/../inc/x.h \\\n\nDIR/hello.o: $(deps_DIR/hello.o)\n",
		"mod/.hello.ko.cmd":             "cmd_DIR/hello.ko := ld -r -o DIR/hello.ko DIR/hello.o\n",
		"inc/x.h":                       "#define X 1\n",
		"kernel/.config":                "CONFIG_MODULES=y\n",
		"kernel/scripts/Makefile.build": "rust-analyzer:\n\techo '{\"crates\": []}' > $(extmod_prefix)rust-project.json\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, strings.ReplaceAll(content, "DIR", dir))
	}
	env := []string{"abs_srctree=" + kernel, "PATH=" + os.Getenv("PATH")}
	line := func(pid, mk int, target, text string) makelog.Line {
		return makelog.Line{Target: target, Dir: kernel, Env: env, Text: text, PID: pid, Make: mk, Flags: []string{"-c"}}
	}
	return dir, replay.Learn(nil, dir, []makelog.Line{
		line(3, 1, dir, "make -f scripts/Makefile.build obj="+dir),
		line(5, 3, dir+"/hello.o", "gcc -I../inc -c -o "+dir+"/hello.o "+dir+"/"+src),
		line(6, 3, dir+"/hello.ko", "ld -r -o "+dir+"/hello.ko "+dir+"/hello.o"),
	})
}

func TestMakeBuild(t *testing.T) {
	tests := []struct {
		name     string
		makefile string
		wantKO   string // relative to the dir
		wantErr  string
	}{
		{"module from modules.order", "all:\n\t@echo ./sub/m.o > modules.order; mkdir -p sub; touch sub/m.ko\n", "sub/m.ko", ""},
		{"make fails", "all:\n\t@echo compiling; false\n", "", "make: *** [Makefile:2: all] Error 1"},
		{"module missing after make", "all:\n\t@echo m.o > modules.order\n", "", "did not produce"},
		{"no modules.order", "all:\n\t@true\n", "", "modules.order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "Makefile"), tt.makefile)
			res, err := (&Make{Dir: dir}).Build(context.Background(), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, tt.wantKO); res.KO != want {
				t.Errorf("KO = %q, want %q", res.KO, want)
			}
		})
	}
}

func TestMakeFailureIsError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Makefile"), "all:\n\t@echo '"+dir+"/a.c:3:1: error: boom'; exit 2\n")
	var log syncBuffer
	_, err := (&Make{Dir: dir}).Build(context.Background(), &log)
	var be *Error
	if !errors.As(err, &be) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Errorf("Error.Err = %v, want the *exec.ExitError", be.Err)
	}
	if err.Error() != "a.c:3:1: error: boom" {
		t.Errorf("Error() = %q", err.Error())
	}
	if !strings.Contains(log.String(), dir+"/a.c:3:1: error: boom\n") {
		t.Errorf("the log did not get make's output verbatim: %q", log.String())
	}
}

// procsIn lists processes started for dir: their working directory is dir or
// their command line names it (make -C kdir M=dir, and the compilers it runs).
func procsIn(t *testing.T, dir string) []string {
	t.Helper()
	pids, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range pids {
		cwd, _ := os.Readlink(p + "/cwd")
		cmdline, _ := os.ReadFile(p + "/cmdline")
		if cwd == dir || strings.Contains(string(cmdline), dir) {
			found = append(found, filepath.Base(p)+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

// cancelWhenRunning cancels the build once ready reports true, and reports
// whether it got there before the build ended.
func cancelWhenRunning(b Builder, out *syncBuffer, ready func() bool) (running bool, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := b.Build(ctx, out)
		done <- err
	}()
	for {
		select {
		case err := <-done:
			return false, err
		case <-time.After(5 * time.Millisecond):
			if ready() {
				cancel()
				return true, <-done
			}
		}
	}
}

func TestMakeCancel(t *testing.T) {
	dir := t.TempDir()
	// sh runs sleep as a grandchild of make: killing make alone would leave it.
	writeFile(t, filepath.Join(dir, "Makefile"), "all:\n\t@echo started; sleep 60; echo slept\n")
	var log syncBuffer
	running, err := cancelWhenRunning(&Make{Dir: dir}, &log, func() bool {
		// Seeing the first line while make still runs also shows the output is streamed.
		return strings.Contains(log.String(), "started\n")
	})
	if !running {
		t.Fatalf("the build ended before it was cancelled: %v\n%s", err, log.String())
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if strings.Contains(log.String(), "slept") {
		t.Error("the build ran to its end instead of being stopped")
	}
	if left := procsIn(t, dir); len(left) > 0 {
		t.Errorf("processes left after cancel: %q", left)
	}
}

// A source rewritten while make runs leaves an object newer than it but
// compiled from the old text; make would keep it. Build must say so and
// remove what it wrote (what Kbuild keeps a .NAME.cmd record of), while
// older objects and one the user copied in during the build stay.
func TestMakeSourcesChangedDuringBuild(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "old.o"), "built long ago")
	writeFile(t, filepath.Join(dir, ".old.o.cmd"), "cmd_old.o := cc -c old.c")
	past := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "old.o"), past, past)
	writeFile(t, filepath.Join(dir, "m.c"), "v1")
	writeFile(t, filepath.Join(dir, "Makefile"), "all:\n\t@cp m.c m.o; echo 'cmd_m.o := cp m.c m.o' > .m.o.cmd; "+
		"echo v2 > m.c; echo blob > vendor.o; echo m.o > modules.order; cp m.o m.ko; echo 'cmd_m.ko := cp m.o m.ko' > .m.ko.cmd\n")
	// Let the writes above age past the build's start.
	time.Sleep(50 * time.Millisecond)
	_, err := (&Make{Dir: dir}).Build(context.Background(), nil)
	if !errors.Is(err, ErrSourcesChanged) {
		t.Fatalf("err = %v, want ErrSourcesChanged", err)
	}
	for _, f := range []string{"m.o", "m.ko"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written from the old source was kept (%v)", f, err)
		}
	}
	for _, f := range []string{"old.o", "vendor.o"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s, which this build did not write, was removed: %v", f, err)
		}
	}
	// Nothing changes during the next build: it succeeds.
	writeFile(t, filepath.Join(dir, "Makefile"), "all:\n\t@cp m.c m.o; echo m.o > modules.order; cp m.o m.ko\n")
	time.Sleep(50 * time.Millisecond)
	if _, err := (&Make{Dir: dir}).Build(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

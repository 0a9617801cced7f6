package builder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fakeKDir makes a kernel build dir that Kbuild can inspect (it runs nothing in it).
func fakeKDir(t *testing.T, configFile, config string) string {
	kdir := t.TempDir()
	writeFile(t, filepath.Join(kdir, "Makefile"), "")
	os.MkdirAll(filepath.Join(kdir, "include/config"), 0o755)
	writeFile(t, filepath.Join(kdir, configFile), config)
	return kdir
}

func rustcVersionOf(t *testing.T, rustc string) string {
	out, err := exec.Command(rustc, "--version").Output()
	if err != nil {
		t.Skipf("%s: %v", rustc, err)
	}
	return strings.TrimSpace(string(out))
}

func TestKbuildToolchain(t *testing.T) {
	if _, err := os.Stat(systemRustc); err != nil {
		t.Skip("needs /usr/bin/rustc")
	}
	cargoRustc := filepath.Join(os.Getenv("HOME"), ".cargo/bin/rustc")
	// A rustup rustc first on PATH, as on a developer's machine.
	t.Setenv("PATH", filepath.Dir(cargoRustc)+":"+os.Getenv("PATH"))
	systemVersion := rustcVersionOf(t, systemRustc)

	type test struct {
		name       string
		configFile string
		config     string
		opts       KbuildOptions
		wantVars   []string // make variables between -j and modules
		wantPATH   bool     // /usr/bin first on PATH
	}
	tests := []test{
		{"gcc", ".config", "CONFIG_CC_IS_GCC=y\n# CONFIG_RUST is not set\n", KbuildOptions{}, nil, false},
		{"clang, auto.conf only", "include/config/auto.conf", "CONFIG_CC_IS_CLANG=y\n", KbuildOptions{}, []string{"LLVM=1"}, false},
		{"rust without a recorded rustc", ".config", "CONFIG_CC_IS_CLANG=y\nCONFIG_RUST=y\n", KbuildOptions{},
			[]string{"LLVM=1", "RUSTC=/usr/bin/rustc", "BINDGEN=/usr/bin/bindgen", "HOSTRUSTC=/usr/bin/rustc"}, true},
		{"rust with the system rustc recorded", ".config", "CONFIG_RUST=y\nCONFIG_RUSTC_VERSION_TEXT=\"" + systemVersion + "\"\n", KbuildOptions{},
			[]string{"RUSTC=/usr/bin/rustc", "BINDGEN=/usr/bin/bindgen", "HOSTRUSTC=/usr/bin/rustc"}, true},
		{"rust with options and extras", ".config", "CONFIG_RUST=y\n",
			KbuildOptions{RustC: "/opt/rustc", Bindgen: "/opt/bindgen", Extra: []string{"V=1", "RUSTC=/x"}},
			[]string{"RUSTC=/opt/rustc", "BINDGEN=/opt/bindgen", "HOSTRUSTC=/opt/rustc", "V=1", "RUSTC=/x"}, true},
	}
	if _, err := os.Stat(cargoRustc); err == nil {
		if v := rustcVersionOf(t, cargoRustc); v != systemVersion {
			tests = append(tests, test{"rust with the rustup rustc recorded", ".config", "CONFIG_RUST=y\nCONFIG_RUSTC_VERSION_TEXT=\"" + v + "\"\n", KbuildOptions{},
				[]string{"RUSTC=" + cargoRustc, "BINDGEN=/usr/bin/bindgen", "HOSTRUSTC=" + cargoRustc}, true})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kdir := fakeKDir(t, tt.configFile, tt.config)
			tt.opts.KDir = kdir
			m, err := Kbuild("x/../mod", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			wd, _ := os.Getwd()
			if want := filepath.Join(wd, "mod"); m.Dir != want {
				t.Errorf("Dir = %q, want %q", m.Dir, want)
			}
			head := []string{"-C", kdir, "M=" + m.Dir}
			if len(m.Args) < 5 || !reflect.DeepEqual(m.Args[:3], head) || !strings.HasPrefix(m.Args[3], "-j") || m.Args[len(m.Args)-1] != "modules" {
				t.Fatalf("Args = %q, want -C kdir M=dir -jN ... modules", m.Args)
			}
			if vars := m.Args[4 : len(m.Args)-1]; !slices.Equal(vars, tt.wantVars) {
				t.Errorf("variables = %q, want %q", vars, tt.wantVars)
			}
			if !tt.wantPATH {
				if m.Env != nil {
					t.Errorf("Env = %q, want nil (the caller's environment)", m.Env)
				}
				return
			}
			i := slices.IndexFunc(m.Env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
			if i < 0 || !strings.HasPrefix(m.Env[i], "PATH=/usr/bin:"+filepath.Dir(cargoRustc)+":") {
				t.Errorf("Env has no PATH with /usr/bin first: %q", m.Env)
			}
		})
	}
}

func TestKbuildMissingKDir(t *testing.T) {
	tests := []struct{ kdir, want, hint string }{
		{"/lib/modules/9.9.9-nope/build", "kernel build dir /lib/modules/9.9.9-nope/build not found",
			"install linux-headers-9.9.9-nope, or pass --kdir with a configured kernel build dir (one with a Makefile and .config)"},
		{"/nonexistent/linux", "kernel build dir /nonexistent/linux not found",
			"pass --kdir with a configured kernel build dir (one with a Makefile and .config)"},
	}
	for _, tt := range tests {
		_, err := Kbuild(".", KbuildOptions{KDir: tt.kdir})
		var be *Error
		if !errors.As(err, &be) || be.Err.Error() != tt.want || be.Fix != tt.hint {
			t.Errorf("Kbuild(KDir %s) = %#v, want %q with hint %q", tt.kdir, err, tt.want, tt.hint)
		}
	}
}

func TestSystemPathFirst(t *testing.T) {
	tests := []struct {
		env  []string
		want []string
	}{
		{[]string{"HOME=/root", "PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin"},
			[]string{"HOME=/root", "PATH=/usr/bin:/root/.cargo/bin:/usr/local/bin:/bin"}},
		{[]string{"PATH=/usr/bin"}, []string{"PATH=/usr/bin"}},
		{[]string{"HOME=/root"}, []string{"HOME=/root", "PATH=/usr/bin"}},
	}
	for _, tt := range tests {
		if got := systemPathFirst(tt.env); !slices.Equal(got, tt.want) {
			t.Errorf("systemPathFirst(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

// The tests below build real modules against the installed kernel headers
// (the host may run another kernel, so any /lib/modules/*/build will do).

func headersDirForTest(t *testing.T) (kdir, release string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a real module")
	}
	dirs, _ := filepath.Glob("/lib/modules/*/build/Makefile")
	if len(dirs) == 0 {
		t.Skip("no kernel headers in /lib/modules/*/build")
	}
	kdir = filepath.Dir(dirs[0])
	return kdir, filepath.Base(filepath.Dir(kdir))
}

// copyExample copies examples/name to a fresh dir, so builds leave the repo clean.
func copyExample(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("..", "examples", name)
	dst := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cp", "-r", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", src, err, out)
	}
	return dst
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	writeFile(t, path, strings.Replace(string(data), old, new, 1))
}

func kbuild(t *testing.T, dir string, opts KbuildOptions) (Result, string, error) {
	t.Helper()
	m, err := Kbuild(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	res, err := m.Build(context.Background(), &log)
	return res, log.String(), err
}

func TestKbuildHello(t *testing.T) {
	kdir, release := headersDirForTest(t)
	dir := copyExample(t, "hello-c")
	opts := KbuildOptions{KDir: kdir}

	res, log, err := kbuild(t, dir, opts)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	if res.KO != filepath.Join(dir, "hello.ko") {
		t.Errorf("KO = %q, want hello.ko in %s", res.KO, dir)
	}
	info, err := ReadModinfo(res.KO)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "hello" || !strings.HasPrefix(info.Vermagic, release+" ") || info.License != "GPL" || info.Version != "1" {
		t.Errorf("modinfo = %+v, want hello, vermagic %s, GPL, version 1", info, release)
	}

	// Nothing changed: Kbuild compiles nothing.
	if _, log, err = kbuild(t, dir, opts); err != nil || strings.Contains(log, "CC [M]") {
		t.Errorf("no-op rebuild: err %v, log:\n%s", err, log)
	}

	edit(t, filepath.Join(dir, "hello.c"), "#define HELLO_VERSION 1", "#define HELLO_VERSION 2")
	if res, log, err = kbuild(t, dir, opts); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, log)
	}
	if info, err = ReadModinfo(res.KO); err != nil || info.Version != "2" {
		t.Errorf("after the edit: version %q, err %v; want version 2", info.Version, err)
	}

	edit(t, filepath.Join(dir, "hello.c"), "return 0;", "return 0")
	_, log, err = kbuild(t, dir, opts)
	var be *Error
	if !errors.As(err, &be) {
		t.Fatalf("syntax error: err = %v, want *Error\n%s", err, log)
	}
	if len(be.Diagnostics) == 0 || !regexp.MustCompile(`^hello\.c:\d+:\d+: error: `).MatchString(be.Diagnostics[0]) {
		t.Errorf("diagnostics = %q, want hello.c:N:M: error: first", be.Diagnostics)
	}
	if !strings.Contains(log, dir+"/hello.c") {
		t.Errorf("the build log was not streamed to out:\n%s", log)
	}
}

func TestKbuildCancel(t *testing.T) {
	kdir, _ := headersDirForTest(t)
	dir := copyExample(t, "hello-c")
	m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	running, err := cancelWhenRunning(m, &log, func() bool {
		// Wait for the compiler itself, not only make.
		return strings.Contains(log.String(), "CC [M]")
	})
	if !running {
		t.Fatalf("the build ended before it was cancelled: %v\n%s", err, log.String())
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hello.ko")); err == nil {
		t.Error("the build ran to its end instead of being stopped")
	}
	if left := procsIn(t, dir); len(left) > 0 {
		t.Errorf("processes left after cancel: %q", left)
	}
	// A cancelled build leaves no half-written object behind: the next one works.
	if _, log, err := kbuild(t, dir, KbuildOptions{KDir: kdir}); err != nil {
		t.Fatalf("build after cancel: %v\n%s", err, log)
	}
}

func TestKbuildPrinterfact(t *testing.T) {
	kdir, _ := headersDirForTest(t)
	dir := copyExample(t, "printerfact-c")
	res, log, err := kbuild(t, dir, KbuildOptions{KDir: kdir})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	if strings.Contains(log, "warning:") {
		t.Errorf("printerfact.c builds with warnings:\n%s", log)
	}
	info, err := ReadModinfo(res.KO)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "printerfact" || len(info.Params) != 1 || info.Params[0].Name != "facts_limit" ||
		info.Params[0].Type != "int" || info.Params[0].Description == "" {
		t.Errorf("modinfo = %+v, want printerfact with a documented int facts_limit", info)
	}
}

// rustKernelForTest returns the Rust-enabled 6.1 tree scripts/rust-kernel.sh
// builds, if it is there.
func rustKernelForTest(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a real module")
	}
	cache := os.Getenv("KWATCH_RUST_KERNEL_CACHE")
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			t.Skip(err)
		}
		cache = filepath.Join(dir, "kwatch/rust-kernel")
	}
	done, _ := filepath.Glob(filepath.Join(cache, "*/done"))
	if len(done) == 0 {
		t.Skip("no Rust kernel tree: run scripts/rust-kernel.sh")
	}
	return filepath.Join(filepath.Dir(done[0]), "linux")
}

// helloRust is a minimal module for Linux 6.1's Rust API (byte-string module! fields).
const helloRust = `// SPDX-License-Identifier: GPL-2.0
use kernel::prelude::*;

module! {
    type: HelloRust,
    name: b"hello_rust",
    author: b"kwatch",
    description: b"kwatch builder test",
    license: b"GPL",
}

struct HelloRust;

impl kernel::Module for HelloRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(HelloRust)
    }
}

impl Drop for HelloRust {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
`

func TestKbuildRust(t *testing.T) {
	kdir := rustKernelForTest(t)
	cargoBin := filepath.Join(os.Getenv("HOME"), ".cargo/bin")
	// As on a developer's machine: a rustup rustc, which cannot build kernel code, first on PATH.
	t.Setenv("PATH", cargoBin+":"+os.Getenv("PATH"))
	newModule := func(t *testing.T) string {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "Kbuild"), "obj-m := hello_rust.o\n")
		writeFile(t, filepath.Join(dir, "hello_rust.rs"), helloRust)
		return dir
	}

	t.Run("builds", func(t *testing.T) {
		dir := newModule(t)
		m, err := Kbuild(dir, KbuildOptions{KDir: kdir})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(m.Args, "LLVM=1") || !slices.Contains(m.Args, "RUSTC=/usr/bin/rustc") {
			t.Errorf("Args = %q, want LLVM=1 and RUSTC=/usr/bin/rustc", m.Args)
		}
		var log syncBuffer
		res, err := m.Build(context.Background(), &log)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, log.String())
		}
		info, err := ReadModinfo(res.KO)
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != "hello_rust" || info.License != "GPL" {
			t.Errorf("modinfo = %+v, want hello_rust, GPL", info)
		}
	})

	type test struct {
		name     string
		kdir     string
		opts     KbuildOptions
		breakIt  [2]string // old, new in hello_rust.rs
		wantDiag string    // regexp for the first diagnostic
		wantHint string
	}
	tests := []test{
		{"type error", kdir, KbuildOptions{}, [2]string{"Ok(HelloRust)", "Ok(1)"},
			`^hello_rust\.rs:\d+:\d+: error\[E0308\]: mismatched types$`, ""},
		{"rustup rustc", kdir, KbuildOptions{RustC: filepath.Join(cargoBin, "rustc")}, [2]string{},
			"custom targets are unstable", "a rustup rustc is being used: pass --rustc /usr/bin/rustc (the one the kernel was built with)"},
	}
	if hdrs, _ := filepath.Glob("/lib/modules/*/build/Makefile"); len(hdrs) > 0 {
		tests = append(tests, test{"kernel without Rust", filepath.Dir(hdrs[0]), KbuildOptions{}, [2]string{},
			`target\.json`, "the kernel at " + filepath.Dir(hdrs[0]) + " was not built with CONFIG_RUST=y"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.opts.RustC, cargoBin) {
				if _, err := os.Stat(tt.opts.RustC); err != nil {
					t.Skip("no rustup rustc")
				}
			}
			dir := newModule(t)
			if tt.breakIt[0] != "" {
				edit(t, filepath.Join(dir, "hello_rust.rs"), tt.breakIt[0], tt.breakIt[1])
			}
			tt.opts.KDir = tt.kdir
			_, log, err := kbuild(t, dir, tt.opts)
			var be *Error
			if !errors.As(err, &be) {
				t.Fatalf("err = %v, want *Error\n%s", err, log)
			}
			if len(be.Diagnostics) == 0 || !regexp.MustCompile(tt.wantDiag).MatchString(be.Diagnostics[0]) {
				t.Errorf("diagnostics = %q, want the first to match %s", be.Diagnostics, tt.wantDiag)
			}
			if be.Fix != tt.wantHint {
				t.Errorf("hint = %q, want %q", be.Fix, tt.wantHint)
			}
		})
	}
}

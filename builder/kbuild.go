package builder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"kwatch/proc"
)

// KbuildOptions says which kernel to build against and how.
type KbuildOptions struct {
	KDir    string   // the kernel build dir, e.g. /lib/modules/$(uname -r)/build
	RustC   string   // "" = the rustc the kernel was configured with, else /usr/bin/rustc, else rustc
	Bindgen string   // "" = /usr/bin/bindgen, else bindgen
	Extra   []string // extra make variables from the user; they override ours
}

// systemRustc is where Debian (and the kernels kwatch builds) keep the rustc
// that can build kernel code; a rustup rustc cannot.
const systemRustc = "/usr/bin/rustc"

var headersDir = regexp.MustCompile(`^/lib/modules/([^/]+)/build$`)

// Kbuild returns a Make for `make -C kdir M=dir modules` with the toolchain the
// kernel at kdir was built with: LLVM=1 for a clang-built kernel, and for a Rust
// kernel a rustc that can build kernel code.
func Kbuild(dir string, opts KbuildOptions) (*Make, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving module dir %s: %w", dir, err)
	}
	kdir, err := filepath.Abs(opts.KDir)
	if err != nil {
		return nil, fmt.Errorf("resolving kernel build dir %s: %w", opts.KDir, err)
	}
	if _, err := os.Stat(filepath.Join(kdir, "Makefile")); err != nil {
		hint := "pass --kdir with a configured kernel build dir (one with a Makefile and .config)"
		if m := headersDir.FindStringSubmatch(kdir); m != nil {
			hint = "install linux-headers-" + m[1] + ", or " + hint
		}
		return nil, &Error{Err: fmt.Errorf("kernel build dir %s not found", kdir), Fix: hint}
	}
	config, err := ReadKconfig(kdir)
	if err != nil {
		return nil, err
	}

	args := []string{"-C", kdir, "M=" + dir, "-j" + strconv.Itoa(runtime.NumCPU())}
	var env []string
	if config["CONFIG_CC_IS_CLANG"] == "y" {
		args = append(args, "LLVM=1")
	}
	if config["CONFIG_RUST"] == "y" {
		rustc := opts.RustC
		if rustc == "" {
			rustc = kernelRustc(config["CONFIG_RUSTC_VERSION_TEXT"])
		}
		bindgen := opts.Bindgen
		if bindgen == "" {
			bindgen = existingOr("/usr/bin/bindgen", "bindgen")
		}
		args = append(args, "RUSTC="+rustc, "BINDGEN="+bindgen, "HOSTRUSTC="+rustc)
		// Kbuild also runs tools by bare name; ~/.cargo/bin must not shadow the system's.
		env = systemPathFirst(os.Environ())
	}
	args = append(args, opts.Extra...)
	args = append(args, "modules")
	return &Make{Dir: dir, Args: args, Env: env, KDir: kdir}, nil
}

// ReadKconfig reads the kernel's configuration: .config, or
// include/config/auto.conf where a headers package ships only that.
func ReadKconfig(kdir string) (map[string]string, error) {
	var data []byte
	var err error
	for _, name := range []string{".config", "include/config/auto.conf"} {
		if data, err = os.ReadFile(filepath.Join(kdir, name)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the configuration of the kernel at %s: %w (is it configured?)", kdir, err)
	}
	return ParseKconfig(data), nil
}

// ParseKconfig reads a kernel configuration (.config, auto.conf,
// /boot/config-*): CONFIG_X to its value, quotes removed.
func ParseKconfig(data []byte) map[string]string {
	config := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok || !strings.HasPrefix(key, "CONFIG_") {
			continue
		}
		if s, err := strconv.Unquote(val); err == nil {
			val = s
		}
		config[key] = val
	}
	return config
}

// kernelRustc picks the rustc whose `--version` is versionText (what the kernel
// recorded, since 6.1.y's backport of CONFIG_RUSTC_VERSION_TEXT), else the system one.
func kernelRustc(versionText string) string {
	if rustc, ok := MatchingRustc(versionText); ok {
		return rustc
	}
	return existingOr(systemRustc, "rustc")
}

// MatchingRustc finds a rustc whose `--version` is versionText: /usr/bin/rustc
// first, then the one on PATH. ok is false when none is, or versionText is "".
func MatchingRustc(versionText string) (rustc string, ok bool) {
	if versionText == "" {
		return "", false
	}
	candidates := []string{systemRustc}
	if p, err := exec.LookPath("rustc"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if RustcVersion(c) == versionText {
			return c, true
		}
	}
	return "", false
}

// RustcVersion is what `rustc --version` prints, or "" when it cannot run.
func RustcVersion(rustc string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.Command(rustc, "--version")
	cmd.Stdout = &out
	if proc.Run(ctx, cmd) != nil {
		return ""
	}
	return strings.TrimSpace(out.String())
}

func existingOr(path, fallback string) string {
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return fallback
}

// systemPathFirst returns env with /usr/bin moved to the front of PATH.
func systemPathFirst(env []string) []string {
	out := make([]string, 0, len(env)+1)
	path := "/usr/bin"
	for _, kv := range env {
		val, ok := strings.CutPrefix(kv, "PATH=")
		if !ok {
			out = append(out, kv)
			continue
		}
		for _, p := range filepath.SplitList(val) {
			if p != "/usr/bin" {
				path += ":" + p
			}
		}
	}
	return append(out, "PATH="+path)
}

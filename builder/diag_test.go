package builder

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// scan feeds output to a scanner for a build in dir, in chunks that split lines,
// and returns the Error a failed build would get.
func scan(dir, output string) *Error {
	s := newScanner(dir, &strings.Builder{}, "/usr/bin/rustc", "/kdir")
	for len(output) > 0 {
		n := min(7, len(output))
		s.Write([]byte(output[:n]))
		output = output[n:]
	}
	s.flush()
	return s.failure(errors.New("exit status 2"))
}

// Build outputs below were captured on this machine from Linux 6.1 builds.
func TestDiagnostics(t *testing.T) {
	tests := []struct {
		name   string
		dir    string
		output string
		want   []string
	}{
		{"gcc syntax error", "/tmp/ex-hello-c", `make[1]: Entering directory '/usr/src/linux-headers-6.1.0-56-amd64'
  CC [M]  /tmp/ex-hello-c/hello.o
/tmp/ex-hello-c/hello.c: In function ‘hello_init’:
/tmp/ex-hello-c/hello.c:19:17: error: expected ‘;’ before ‘}’ token
   19 |         return 0
      |                 ^
      |                 ;
   20 | }
      | ~
make[2]: *** [/usr/src/linux-headers-6.1.0-56-common/scripts/Makefile.build:255: /tmp/ex-hello-c/hello.o] Error 1
make[1]: *** [/usr/src/linux-headers-6.1.0-56-common/Makefile:2065: /tmp/ex-hello-c] Error 2
make: *** [Makefile:6: default] Error 2
`, []string{"hello.c:19:17: error: expected ‘;’ before ‘}’ token"}},

		{"errors before warnings", "/tmp/m2", `/tmp/m2/hello.c: In function ‘hello_init’:
/tmp/m2/hello.c:18:13: warning: unused variable ‘unused’ [-Wunused-variable]
/tmp/m2/hello.c:20:24: error: implicit declaration of function ‘undeclared’ [-Werror=implicit-function-declaration]
cc1: some warnings being treated as errors
make[1]: *** [/usr/src/linux-headers-6.1.0-56-common/scripts/Makefile.build:255: /tmp/m2/hello.o] Error 1`, []string{
			"hello.c:20:24: error: implicit declaration of function ‘undeclared’ [-Werror=implicit-function-declaration]",
			"hello.c:18:13: warning: unused variable ‘unused’ [-Wunused-variable]",
		}},

		{"modpost", "/tmp/m2", `  MODPOST /tmp/m2/Module.symvers
ERROR: modpost: "kwatch_nope" [/tmp/m2/hello.ko] undefined!
make[1]: *** [/usr/src/linux-headers-6.1.0-56-common/scripts/Makefile.modpost:127: /tmp/m2/Module.symvers] Error 1
`, []string{`ERROR: modpost: "kwatch_nope" [hello.ko] undefined!`}},

		{"make only: innermost failure", "/tmp/m1", `make: Entering directory '/usr/src/linux-headers-6.1.0-56-amd64'
make[1]: *** No rule to make target '/tmp/m1/missing.o', needed by '/tmp/m1/'.  Stop.
make: *** [/usr/src/linux-headers-6.1.0-56-common/Makefile:2065: /tmp/m1] Error 2
`, []string{"make[1]: *** No rule to make target 'missing.o', needed by '/tmp/m1/'.  Stop."}},

		{"rustc error joined with its location", "/tmp/ex-rust", `  RUSTC [M] /tmp/ex-rust/hello_rust.o
error[E0308]: mismatched types
   --> /tmp/ex-rust/hello_rust.rs:34:12
    |
34  |         Ok(1)
    |         -- ^ expected struct ` + "`HelloRust`" + `, found integer
    |
note: tuple variant defined here
   --> /usr/lib/rustlib/src/rust/library/core/src/result.rs:508:5
    |

error: aborting due to previous error

For more information about this error, try ` + "`rustc --explain E0308`" + `.
make[1]: *** [scripts/Makefile.build:315: /tmp/ex-rust/hello_rust.o] Error 1
`, []string{"hello_rust.rs:34:12: error[E0308]: mismatched types"}},

		{"rustc error without location, then warning", "/tmp/ex-rust", `warning: unused variable: ` + "`x`" + `
 --> /tmp/ex-rust/sub/x.rs:3:9
error: error loading target specification: custom targets are unstable and require ` + "`-Zunstable-options`" + `
  |
  = help: run ` + "`rustc --print target-list`" + ` for a list of built-in targets

warning: 1 warning emitted
`, []string{
			"error: error loading target specification: custom targets are unstable and require `-Zunstable-options`",
			"sub/x.rs:3:9: warning: unused variable: `x`",
		}},

		{"rustc header as the last line", "/m", "error: target file \"./rust/target.json\" does not exist", []string{
			`error: target file "./rust/target.json" does not exist`,
		}},

		{"coloured output", "/m", "\x1b[01m\x1b[K/m/a.c:1:2:\x1b[m\x1b[K \x1b[01;31m\x1b[Kerror: \x1b[m\x1b[Kboom\n",
			[]string{"a.c:1:2: error: boom"}},

		{"duplicates dropped", "/m", "/m/a.h:1:2: error: boom\n/m/a.h:1:2: error: boom\n", []string{"a.h:1:2: error: boom"}},

		{"nothing recognisable", "/m", "Killed\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := scan(tt.dir, tt.output)
			if !reflect.DeepEqual(e.Diagnostics, tt.want) {
				t.Errorf("diagnostics:\n got %q\nwant %q", e.Diagnostics, tt.want)
			}
		})
	}
}

func TestDiagnosticsCapped(t *testing.T) {
	var out strings.Builder
	for i := 1; i <= 3*maxDiagnostics; i++ {
		fmt.Fprintf(&out, "/m/a.c:%d:1: error: e%d\n/m/a.c:%d:2: warning: w%d\n", i, i, i, i)
	}
	e := scan("/m", out.String())
	if len(e.Diagnostics) != maxDiagnostics || e.Diagnostics[0] != "a.c:1:1: error: e1" ||
		e.Diagnostics[maxDiagnostics-1] != fmt.Sprintf("a.c:%d:1: error: e%d", maxDiagnostics, maxDiagnostics) {
		t.Errorf("got %q, want the first %d errors", e.Diagnostics, maxDiagnostics)
	}
}

func TestErrorMessage(t *testing.T) {
	exit := errors.New("exit status 2")
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Diagnostics: []string{"a.c:1:1: error: x", "a.c:2:1: error: y"}, Err: exit}, "a.c:1:1: error: x"},
		{&Error{Err: exit}, "build failed: exit status 2"},
		{&Error{}, "build failed"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !errors.Is(&Error{Err: exit}, exit) {
		t.Error("Error does not unwrap to its Err")
	}
}

// Lines below are captured from real builds (rustc 1.63 and 1.95, Linux 6.1's
// rust_is_available.sh, and the 6.11+ Makefile's compiler check).
func TestHints(t *testing.T) {
	const (
		crates  = "the kernel's Rust crates are missing or were built by another rustc: build the module with the same rustc as the kernel (--rustc, now /usr/bin/rustc)"
		noRust  = "the kernel at /kdir was not built with CONFIG_RUST=y"
		rustup  = "a rustup rustc is being used: pass --rustc /usr/bin/rustc (the one the kernel was built with)"
		version = "rustc /usr/bin/rustc is not the version the kernel at /kdir was built with: pass --rustc with that one"
	)
	tests := []struct {
		output string
		want   string
	}{
		{"error[E0463]: can't find crate for `kernel`\n --> a.rs:1:1", crates},
		{"error[E0786]: found invalid metadata files for crate `foo`\n --> b.rs:1:1", crates},
		{"error[E0514]: found crate `kernel` compiled by an incompatible version of rustc", crates},
		{"error[E0461]: couldn't find crate `core` with expected target triple target-5559158138856098584", crates},
		{"error: error loading target specification: target-pointer-width: invalid type: string \"64\", expected u16 at line 6 column 32", crates},
		{"error: target file \"./rust/target.json\" does not exist", noRust},
		{"make[2]: *** No rule to make target 'scripts/target.json', needed by 'x.o'.  Stop.", noRust},
		{"error: error loading target specification: custom targets are unstable and require `-Zunstable-options`", rustup},
		{"*** Rust compiler '/usr/bin/rustc' is too new. This may or may not work.", version},
		{"*** Rust compiler '/usr/bin/rustc' is too old.", version},
		{"warning: the Rust compiler differs from the one used to build the kernel\n  The kernel was built by: rustc 1.78.0", version},
		// The specific hint wins over the general one, whatever the order of the lines.
		{"warning: the Rust compiler differs from the one used to build the kernel\nerror[E0514]: found crate `kernel` compiled by an incompatible version of rustc", crates},
		{"error: error loading target specification: custom targets are unstable and require `-Zunstable-options`\nerror[E0463]: can't find crate for `kernel`", rustup},
		{"/m/a.c:1:1: error: expected ';'", ""},
		{"error[E0308]: mismatched types\n --> /m/x.rs:26:26", ""},
	}
	for _, tt := range tests {
		if got := scan("/m", tt.output).Fix; got != tt.want {
			t.Errorf("hint for %q:\n got %q\nwant %q", tt.output, got, tt.want)
		}
	}
}

package nix

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kwatch/nix/nixtest"
)

var update = flag.Bool("update", false, "rewrite examples/printerfact from the templates")

const testKey = `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH2k kwatch "quoted" ${not-interpolated} \`

func TestInitWritesProject(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "My-Module")
	written, err := Init(dir, InitOptions{AuthorizedKey: constKey(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"flake.nix", "configuration.nix", "module.nix", "src/Kbuild", "src/Makefile", "src/my_module.rs", ".gitignore"}
	if !reflect.DeepEqual(written, want) {
		t.Fatalf("written = %q, want %q", written, want)
	}
	for _, check := range []struct{ file, want string }{
		{"src/my_module.rs", "type: MyModule,\n    name: \"my_module\",\n    authors: ["},
		{"src/Kbuild", "obj-m := my_module.o\n"},
		{"module.nix", `pname = "my_module";`},
		{"configuration.nix", `keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH2k kwatch \"quoted\" \${not-interpolated} \\" ];`},
		{".gitignore", "result*\n.kwatch/\n"},
	} {
		got := readFile(t, filepath.Join(dir, check.file))
		if !strings.Contains(got, check.want) {
			t.Errorf("%s does not contain %q:\n%s", check.file, check.want, got)
		}
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"flake.nix", "src/Makefile"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keyMade := false
	written, err := Init(dir, InitOptions{Name: "x", AuthorizedKey: func() (string, error) { keyMade = true; return testKey, nil }})
	if keyMade {
		t.Error("Init made a key although it refused to write")
	}
	if err == nil || err.Error() != "flake.nix, src/Makefile exists: pass --force to overwrite (an existing .gitignore is merged, never overwritten)" {
		t.Fatalf("Init over existing files: %v (wrote %q)", err, written)
	}
	if got := readFile(t, filepath.Join(dir, "flake.nix")); got != "mine\n" {
		t.Fatalf("flake.nix was changed to %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "module.nix")); !os.IsNotExist(err) {
		t.Fatalf("Init wrote module.nix although it refused: %v", err)
	}
	if _, err := Init(dir, InitOptions{Name: "x", Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "flake.nix")); got == "mine\n" {
		t.Fatal("Init with Force did not overwrite flake.nix")
	}
}

func TestInitBadName(t *testing.T) {
	if _, err := Init(t.TempDir(), InitOptions{Name: "42"}); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("Init with name 42: %v", err)
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ in, name, typ string }{
		{"hello", "hello", "Hello"},
		{"My-Module", "my_module", "MyModule"},
		{"rust.out.of.tree", "rust_out_of_tree", "RustOutOfTree"},
		{"a__b_", "a__b_", "AB"},
		{"héllo", "h_llo", "HLlo"},
	} {
		name := moduleName(tc.in)
		if name != tc.name || typeName(name) != tc.typ {
			t.Errorf("%q: name %q type %q, want %q %q", tc.in, name, typeName(name), tc.name, tc.typ)
		}
	}
}

// TestTemplatesAreNix parses every .nix Init writes, and evaluates the key
// list to check the key survives quoting.
func TestTemplatesAreNix(t *testing.T) {
	nixtest.Need(t)
	dir := t.TempDir()
	written, err := Init(dir, InitOptions{Name: "hello", AuthorizedKey: constKey(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range written {
		if strings.HasSuffix(f, ".nix") {
			parseNix(t, filepath.Join(dir, f))
		}
	}
	eval := func(withRust bool, attr string) []byte {
		t.Helper()
		args := fmt.Sprintf(`{ config.boot.kernelPackages.kernel = { withRust = %v; version = "6.6.1"; }; pkgs.linuxPackages_latest = null; }`, withRust)
		out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "-E",
			`(import `+filepath.Join(dir, "configuration.nix")+" "+args+`).`+attr).Output()
		if err != nil {
			t.Fatalf("evaluating %s: %v", attr, err)
		}
		return out
	}
	out := eval(true, "users.users.root.openssh.authorizedKeys.keys")
	var keys []string
	if err := json.Unmarshal(out, &keys); err != nil || !reflect.DeepEqual(keys, []string{testKey}) {
		t.Fatalf("authorized keys = %s (%v), want [%q]", out, err, testKey)
	}

	// The kernel's Rust support is asserted, not forced with a kernel patch
	// (which would make nix compile the kernel instead of fetching it).
	if strings.Contains(readFile(t, filepath.Join(dir, "configuration.nix")), "kernelPatches =") {
		t.Error("configuration.nix sets boot.kernelPatches")
	}
	for _, withRust := range []bool{true, false} {
		var asserts []struct {
			Assertion bool
			Message   string
		}
		if err := json.Unmarshal(eval(withRust, "assertions"), &asserts); err != nil || len(asserts) != 1 {
			t.Fatalf("assertions: %+v, %v; want one", asserts, err)
		}
		a := asserts[0]
		if a.Assertion != withRust || !strings.Contains(a.Message, "linux 6.6.1") || !strings.Contains(a.Message, "boot.kernelPackages") {
			t.Errorf("withRust %v: assertion %+v, want it to hold exactly when withRust, and a message naming the kernel and the fix", withRust, a)
		}
	}
}

// printerfactKernel is what examples/printerfact legitimately changes in
// what Init writes: it pins the kernel its Rust was written against, where a
// new project follows linuxPackages_latest.
var printerfactKernel = [2]string{
	`  # The newest kernel in nixpkgs, fetched from its binary cache: Rust misc
  # devices can implement read() (read_iter) only since Linux 6.18, and the
  # LTS kernel (linuxPackages) is older.
  boot.kernelPackages = pkgs.linuxPackages_latest;
`,
	`  # Linux 6.18 (an LTS), fetched from the binary cache: src/printerfact.rs
  # is written against 6.18's Rust misc device API (read_iter came in 6.18,
  # and the API keeps changing after it), while linuxPackages_latest moves on
  # to newer kernels. A new kwatch init project follows linuxPackages_latest.
  boot.kernelPackages = pkgs.linuxPackages_6_18;
`,
}

// TestPrinterfactExample keeps examples/printerfact a kwatch init project:
// everything but its module source and its pinned kernel
// (printerfactKernel) is what Init writes.
// go test ./nix -run Printerfact -update rewrites those files.
func TestPrinterfactExample(t *testing.T) {
	example := filepath.Join("..", "examples", "printerfact")
	dir := t.TempDir()
	written, err := Init(dir, InitOptions{Name: "printerfact"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range written {
		if f == "src/printerfact.rs" {
			continue
		}
		want := readFile(t, filepath.Join(dir, f))
		if f == "configuration.nix" {
			if !strings.Contains(want, printerfactKernel[0]) {
				t.Fatalf("Init's configuration.nix no longer has the kernel lines the example replaces:\n%s", printerfactKernel[0])
			}
			want = strings.Replace(want, printerfactKernel[0], printerfactKernel[1], 1)
		}
		if *update {
			if err := os.WriteFile(filepath.Join(example, f), []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := readFile(t, filepath.Join(example, f)); got != want {
			t.Errorf("examples/printerfact/%s differs from what Init writes: go test ./nix -run Printerfact -update", f)
		}
	}
	rs := readFile(t, filepath.Join(example, "src", "printerfact.rs"))
	for _, want := range []string{`name: "printerfact"`, "fn read_iter(", "simple_read_from_buffer", `c_str!("printerfact")`} {
		if !strings.Contains(rs, want) {
			t.Errorf("src/printerfact.rs lacks %q", want)
		}
	}
	if !testing.Short() {
		for _, f := range []string{"flake.nix", "configuration.nix", "module.nix"} {
			parseNix(t, filepath.Join(example, f))
		}
	}
}

func parseNix(t *testing.T, path string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("nix-instantiate", "--parse", path)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("nix-instantiate --parse %s: %v\n%s", path, err, stderr.String())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func constKey(k string) func() (string, error) { return func() (string, error) { return k, nil } }

// The user's .gitignore is never a conflict and never overwritten: Init adds
// the lines it lacks and keeps the user's.
func TestInitMergesGitignore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("secrets.txt\n*.o"), 0o644); err != nil {
		t.Fatal(err)
	}
	written, err := Init(dir, InitOptions{Name: "x", AuthorizedKey: constKey(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	got := readFile(t, filepath.Join(dir, ".gitignore"))
	if !strings.HasPrefix(got, "secrets.txt\n*.o\nresult*\n.kwatch/\n") || strings.Count(got, "*.o\n") != 1 {
		t.Fatalf(".gitignore after Init:\n%s", got)
	}
	if written[len(written)-1] != ".gitignore" {
		t.Fatalf("written = %q, want .gitignore reported", written)
	}
	// Run again with nothing to add, .gitignore is left alone and not reported.
	written, err = Init(dir, InitOptions{Name: "x", AuthorizedKey: constKey(testKey), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if again := readFile(t, filepath.Join(dir, ".gitignore")); again != got || written[len(written)-1] == ".gitignore" {
		t.Fatalf("second Init changed .gitignore to %q or reported it (%q)", again, written)
	}
}

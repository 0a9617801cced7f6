package nix

import (
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"kwatch/nix/nixtest"
)

const (
	h1 = "/nix/store/g13l7gh4i8zl3z0yj0lh0m6nc3zfw5v6"
	h2 = "/nix/store/c2a238aq39l8hqn8kifwgqficbb031qv"
)

func TestParsePlan(t *testing.T) {
	tests := []struct {
		name, out string
		want      Plan
		kernel    string // a substring of Kernel(); "" = Kernel() is ""
	}{
		{"kernel to build (nix 2.8)", "these 2 derivations will be built:\n  " + h1 + "-linux-6.18.5.drv\n  " + h2 + "-nixos-vm.drv\n",
			Plan{Build: []string{h1 + "-linux-6.18.5.drv", h2 + "-nixos-vm.drv"}}, "linux-6.18.5 is not in the binary cache"},
		{"kernel from the cache", "this derivation will be built:\n  " + h2 + "-nixos-vm.drv\n" +
			"these 2 paths will be fetched (45.31 MiB download, 260.35 MiB unpacked):\n  " + h1 + "-linux-6.18.5-modules\n  " + h2 + "-linux-6.18.5\n",
			Plan{Build: []string{h2 + "-nixos-vm.drv"}, Fetch: []string{h1 + "-linux-6.18.5-modules", h2 + "-linux-6.18.5"}},
			"linux-6.18.5 comes from the binary cache (2 paths to download, 1 to build)"},
		{"headers and config are not the kernel", "these 2 derivations will be built:\n  " + h1 + "-linux-headers-6.18.5.drv\n  " + h2 + "-linux-config-6.18.5.drv\n",
			Plan{Build: []string{h1 + "-linux-headers-6.18.5.drv", h2 + "-linux-config-6.18.5.drv"}}, ""},
		{"a release candidate", "this derivation will be built:\n  " + h1 + "-linux-6.19-rc4.drv\n",
			Plan{Build: []string{h1 + "-linux-6.19-rc4.drv"}}, "linux-6.19-rc4 is not in the binary cache"},
		{"colours and other lines", "\x1b[1mwarning:\x1b[0m Git tree is dirty\nthis path will be fetched (1 MiB download, 2 MiB unpacked):\n  " + h1 + "-linux-6.12.64\n",
			Plan{Fetch: []string{h1 + "-linux-6.12.64"}}, "comes from the binary cache"},
		{"all built already", "", Plan{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parsePlan(tt.out)
			if !reflect.DeepEqual(p, tt.want) {
				t.Errorf("parsePlan = %+v\nwant %+v", p, tt.want)
			}
			if got := p.Kernel(); (tt.kernel == "") != (got == "") || !strings.Contains(got, tt.kernel) {
				t.Errorf("Kernel() = %q, want it to say %q", got, tt.kernel)
			}
		})
	}
}

// A kernel derivation that is not built yet is reported as compiled here;
// once built, nothing is said.
func TestDryRun(t *testing.T) {
	nixtest.Need(t)
	dir := t.TempDir()
	nixtest.WriteFile(t, filepath.Join(dir, "flake.nix"), `{
  outputs = { self }: let
    kernel = derivation { name = "linux-6.18.5"; system = "x86_64-linux"; builder = "/bin/sh";
      nonce = "`+strconv.FormatInt(time.Now().UnixNano(), 10)+`"; args = [ "-c" "echo kernel > $out" ]; };
  in {
    packages.x86_64-linux.vm = derivation { name = "nixos-vm"; system = "x86_64-linux"; builder = "/bin/sh";
      inherit kernel; args = [ "-c" "echo vm > $out" ]; };
  };
}
`)
	p, err := Settings{}.DryRun(t.Context(), dir+"#vm")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Kernel(); !strings.Contains(got, "linux-6.18.5 is not in the binary cache") || len(p.Build) != 2 {
		t.Fatalf("dry run of an unbuilt kernel: %+v, Kernel() = %q", p, got)
	}
	if _, err := (Settings{}).Build(t.Context(), dir+"#vm", filepath.Join(dir, "result"), nil); err != nil {
		t.Fatal(err)
	}
	if p, err := (Settings{}).DryRun(t.Context(), dir+"#vm"); err != nil || p.Kernel() != "" || len(p.Build)+len(p.Fetch) != 0 {
		t.Errorf("dry run after the build: %+v, %v; want nothing to do", p, err)
	}
	if _, err := (Settings{}).DryRun(t.Context(), dir+"#nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("DryRun of a missing attribute: %v", err)
	}
}

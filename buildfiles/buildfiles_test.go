package buildfiles

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		name          string
		input, output bool
	}{
		{"hello.c", true, false},
		{"hello.h", true, false},
		{"entry.S", true, false},
		{"hello.rs", true, false},
		{"Makefile", true, false},
		{"GNUmakefile", true, false},
		{"Kbuild", true, false},
		{"Kconfig", true, false},
		{"Kconfig.debug", true, false},
		{"Makefile.rules", true, false},
		{"module.nix", true, false},
		{"flake.lock", true, false},
		{"hello.o", false, true},
		{"hello.ko", false, true},
		{"hello.ko.xz", false, true},
		{"hello.mod", false, true},
		{"hello.mod.c", false, true},
		{".hello.o.cmd", false, true},
		{"modules.order", false, true},
		{"Module.symvers", false, true},
		{"libhello.rmeta", false, true},
		{"rust-project.json", false, true},
		{"Makefile.swp", false, false},
		{"hello.c~", false, false},
		{"#hello.c#", false, false},
		{".#hello.c", false, false},
		{"4913", false, false},
		{"hello.c___jb_tmp___", false, false},
		{".hidden.c", false, false},
		{"README.md", false, false},
		{"sedX4bd9c", false, false},
	}
	for _, tt := range tests {
		if got := IsInput(tt.name); got != tt.input {
			t.Errorf("IsInput(%q) = %v, want %v", tt.name, got, tt.input)
		}
		if got := IsOutput(tt.name); got != tt.output {
			t.Errorf("IsOutput(%q) = %v, want %v", tt.name, got, tt.output)
		}
	}
}

func TestIsKbuildFile(t *testing.T) {
	tests := map[string]bool{
		"Kbuild": true, "Makefile": true, "GNUmakefile": true, "Makefile.rules": true, "Kconfig.debug": true,
		"hello.c": false, "hello.h": false, "flake.lock": false, "module.nix": false,
		"Makefile.swp": false, "Makefile~": false, ".Makefile": false,
	}
	for name, want := range tests {
		if got := IsKbuildFile(name); got != want {
			t.Errorf("IsKbuildFile(%q) = %v, want %v", name, got, want)
		}
	}
}

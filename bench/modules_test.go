package main

import (
	"reflect"
	"testing"
)

// The commands of a rebuild as Debian's `make V=1` prints them (shortened),
// and what the compiler floor makes of each.
func TestVerboseCommands(t *testing.T) {
	for _, tc := range []struct {
		name  string
		out   string
		steps []string
		btf   string // the BTF command, put back together from its two lines
	}{{
		name: "6.1, printerfact-c and hello-rust",
		out: `make: Entering directory '/usr/src/linux-headers-6.1.0-57-amd64'
make -f /usr/src/linux-headers-6.1.0-57-common/scripts/Makefile.build obj=/m need-builtin=1 need-modorder=1 
   gcc-12 -Wp,-MMD,/m/.p.o.d -nostdinc -DKBUILD_MODNAME='"p"' -c -o /m/p.o /m/p.c  ; ./tools/objtool/objtool --module /m/p.o
  /usr/src/linux-headers-6.1.0-57-common/scripts/check-local-export /m/p.o
   { echo ; echo '/m/p.o: $(wildcard ./tools/objtool/objtool)' ; } >> /m/.p.o.cmd
  {   echo /m/p.ko; :; } > /m/modules.order
sh /usr/src/linux-headers-6.1.0-57-common/scripts/modules-check.sh /m/modules.order
make -f /usr/src/linux-headers-6.1.0-57-common/scripts/Makefile.modpost
   sed 's/ko$/o/'  /m/modules.order | scripts/mod/modpost -m      -o /m/Module.symvers -e -i Module.symvers -T - 
   gcc-12 -Wp,-MMD,/m/.p.mod.o.d -nostdinc -c -o /m/p.mod.o /m/p.mod.c
  ld -r -m elf_x86_64 --build-id=sha1  -T arch/x86/module.lds -o /m/p.ko /m/p.o /m/p.mod.o;  true
  if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux
" /m/p.ko 1>&2; else pahole -J --btf_base vmlinux /m/p.ko; fi;
  RUST_MODFILE=/m/hello_rust rustc --edition=2021 --emit=obj=/m/hello_rust.o /m/hello_rust.rs
  ld.lld -r -m elf_x86_64 -o /m/hello_rust.ko /m/hello_rust.o
make: Leaving directory '/usr/src/linux-headers-6.1.0-57-amd64'
`,
		steps: []string{"compile", "", "", "", "modpost", ".mod.o", "link", "BTF", "compile", "link"},
		btf:   `if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux\n" /m/p.ko 1>&2; else pahole -J --btf_base vmlinux /m/p.ko; fi;`,
	}, {
		// A cross-prefixed linker, the shared .module-common.o (here as
		// make builds it the first time), and BTF with resolve_btfids.
		name: "6.12, the bench's C module",
		out: `make -f /usr/src/linux-headers-6.12.118+deb12-common/scripts/Makefile.build obj=/m need-builtin=1 need-modorder=1
   x86_64-linux-gnu-gcc-12 -Wp,-MMD,/m/.k.o.d -nostdinc -c -o /m/k.o /m/k.c  ; ./tools/objtool/objtool --link --module /m/k.o
   { echo ; echo '/m/k.o: $(wildcard ./tools/objtool/objtool)' ; } >> /m/.k.o.cmd
  if x86_64-linux-gnu-nm /m/k.o 2>/dev/null | grep -q ' __export_symbol_'; then  x86_64-linux-gnu-gcc-12 -E -D__GENKSYMS__ /m/k.c | scripts/genksyms/genksyms >> /m/.k.o.cmd; fi
  {   echo /m/k.o; :; } > /m/modules.order
   scripts/mod/modpost -M -m       -o /m/Module.symvers -T /m/modules.order -i Module.symvers -e 
make -f /usr/src/linux-headers-6.12.118+deb12-common/scripts/Makefile.modfinal
   x86_64-linux-gnu-gcc-12 -Wp,-MMD,/m/..module-common.o.d -nostdinc -c -o /m/.module-common.o /usr/src/linux-headers-6.12.118+deb12-common/scripts/module-common.c
# LD [M]  /m/k.ko
  x86_64-linux-gnu-ld -r -m elf_x86_64 -z noexecstack --build-id=sha1  -T arch/x86/module.lds -o /m/k.ko /m/k.o /m/k.mod.o /m/.module-common.o
# BTF [M] /m/k.ko
  if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux
" /m/k.ko 1>&2; else LLVM_OBJCOPY="x86_64-linux-gnu-objcopy" pahole -J --btf_base vmlinux /m/k.ko; ./tools/bpf/resolve_btfids/resolve_btfids -b vmlinux /m/k.ko; fi;
`,
		steps: []string{"compile", "", "", "", "modpost", ".mod.o", "link", "BTF"},
		btf:   `if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux\n" /m/k.ko 1>&2; else LLVM_OBJCOPY="x86_64-linux-gnu-objcopy" pahole -J --btf_base vmlinux /m/k.ko; ./tools/bpf/resolve_btfids/resolve_btfids -b vmlinux /m/k.ko; fi;`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := verboseCommands(tc.out)
			var steps []string
			btf := ""
			for _, c := range got {
				steps = append(steps, floorStep(c))
				if floorStep(c) == "BTF" {
					btf = c
				}
			}
			if !reflect.DeepEqual(steps, tc.steps) {
				t.Errorf("steps = %q, want %q\ncommands:\n%q", steps, tc.steps, got)
			}
			if btf != tc.btf {
				t.Errorf("the BTF command was not put back together: %q", btf)
			}
		})
	}
}

package main

import (
	"reflect"
	"testing"
)

// The commands of a printerfact-c rebuild as Debian 6.1's `make V=1` prints
// them (shortened), and what the compiler floor makes of each.
func TestVerboseCommands(t *testing.T) {
	out := `make: Entering directory '/usr/src/linux-headers-6.1.0-57-amd64'
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
`
	got := verboseCommands(out)
	var steps []string
	for _, c := range got {
		steps = append(steps, floorStep(c))
	}
	want := []string{"compile", "", "", "", "modpost", ".mod.o", "link", "link", "compile", "link"}
	if !reflect.DeepEqual(steps, want) {
		t.Errorf("steps = %q, want %q\ncommands:\n%q", steps, want, got)
	}
	if btf := got[7]; btf != `if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux\n" /m/p.ko 1>&2; else pahole -J --btf_base vmlinux /m/p.ko; fi;` {
		t.Errorf("the BTF command was not put back together: %q", btf)
	}
}

package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mirrored is the text of every Kbuild rule and definition a Direct rebuild
// mirrors, as Linux 6.1 has it, by script (whitespace and line
// continuations aside). A kernel whose scripts lack one of them builds
// otherwise, and gets the per-module steps instead.
var mirrored = map[string][]string{
	"Kbuild.include": {
		`dot-target = $(dir $@).$(notdir $@)`,
		`depfile = $(subst $(comma),_,$(dot-target).d)`,
		`escsq = $(subst $(squote),'\$(squote)',$1)`,
		`cmd = @set -e; $(echo-cmd) $($(quiet)redirect) $(delete-on-interrupt) $(cmd_$(1))`,
		`make-cmd = $(call escsq,$(subst $(pound),$$(pound),$(subst $$,$$$$,$(cmd_$(1)))))`,
		`cmd_and_savecmd = $(cmd); printf '%s\n' 'cmd_$@ := $(make-cmd)' > $(dot-target).cmd`,
		`cmd_and_fixdep = $(cmd); scripts/basic/fixdep $(depfile) $@ '$(make-cmd)' > $(dot-target).cmd; rm -f $(depfile)`,
	},
	"Makefile.build": {
		`genksyms = scripts/genksyms/genksyms $(if $(1), -T $(2)) $(if $(KBUILD_PRESERVE), -p) -r $(or $(wildcard $(2:.symtypes=.symref)), /dev/null)`,
		`cmd_gensymtypes_c = $(CPP) -D__GENKSYMS__ $(c_flags) $< | $(genksyms)`,
		`cmd_cc_o_c = $(CC) $(c_flags) -c -o $@ $< $(cmd_ld_single_m) $(cmd_objtool)`,
		`gen_symversions = if $(NM) $@ 2>/dev/null | grep -q __ksymtab; then $(call cmd_gensymtypes_$(1),$(KBUILD_SYMTYPES),$(@:.o=.symtypes)) >> $(dot-target).cmd; fi`,
		`cmd_gen_symversions_c = $(call gen_symversions,c)`,
		`cmd_check_local_export = $(srctree)/scripts/check-local-export $@`,
		`define rule_cc_o_c $(call cmd_and_fixdep,cc_o_c) $(call cmd,gen_ksymdeps) $(call cmd,check_local_export) $(call cmd,checksrc) $(call cmd,checkdoc) $(call cmd,gen_objtooldep) $(call cmd,gen_symversions_c) $(call cmd,record_mcount) endef`,
		`$(obj)/%.o: $(src)/%.c $(recordmcount_source) FORCE $(call if_changed_rule,cc_o_c) $(call cmd,force_checksrc)`,
		`$(obj)/%.mod: FORCE $(call if_changed,mod)`,
		`$(obj)/%.o: $(src)/%.rs FORCE $(call if_changed_dep,rustc_o_rs)`,
		`$(obj)/modules.order: $(obj-m) FORCE $(call if_changed,modules_order)`,
		`define rule_ld_multi_m $(call cmd_and_savecmd,ld_multi_m) $(call cmd,gen_objtooldep) endef`,
		`$(multi-obj-m): %.o: %.mod FORCE $(call if_changed_rule,ld_multi_m)`,
	},
	"Makefile.lib": {
		`objtool := $(objtree)/tools/objtool/objtool`,
		`cmd_objtool = $(if $(objtool-enabled), ; $(objtool) $(objtool-args) $@)`,
		`cmd_gen_objtooldep = $(if $(objtool-enabled), { echo ; echo '$@: $$(wildcard $(objtool))' ; } >> $(dot-target).cmd)`,
	},
	"Makefile.modpost": {
		`output-symdump := $(KBUILD_EXTMOD)/Module.symvers`,
		`MODPOST = scripts/mod/modpost`,
		`$(output-symdump): $(modorder-if-needed) $(vmlinux.o-if-present) $(module.symvers-if-present) $(MODPOST) FORCE $(call if_changed,modpost)`,
	},
	"Makefile.modfinal": {
		`%.mod.o: %.mod.c FORCE $(call if_changed_dep,cc_o_c)`,
		`cmd_btf_ko = if [ ! -f vmlinux ]; then printf "Skipping BTF generation for %s due to unavailability of vmlinux\n" $@ 1>&2; else LLVM_OBJCOPY="$(OBJCOPY)" $(PAHOLE) -J $(PAHOLE_FLAGS) --btf_base vmlinux $@; $(RESOLVE_BTFIDS) -b vmlinux $@; fi;`,
		`if_changed_except = $(if $(call newer_prereqs_except,$(2))$(cmd-check), $(cmd); printf '%s\n' 'cmd_$@ := $(make-cmd)' > $(dot-target).cmd, @:)`,
		`$(modules): %.ko: %.o %.mod.o $(ARCH_MODULE_LDS) $(and $(CONFIG_DEBUG_INFO_BTF_MODULES),$(KBUILD_BUILTIN),vmlinux) FORCE +$(call if_changed_except,ld_ko_o,vmlinux) ifdef CONFIG_DEBUG_INFO_BTF_MODULES +$(if $(newer-prereqs),$(call cmd,btf_ko)) endif`,
	},
}

// mirrorsKbuild checks that the kernel's Kbuild scripts hold every rule a
// Direct rebuild mirrors.
func (g *Graph) mirrorsKbuild() error {
	scripts := filepath.Join(lookup(g.Env, "abs_srctree"), "scripts")
	for name, texts := range mirrored {
		data, err := os.ReadFile(filepath.Join(scripts, name))
		if err != nil {
			return fmt.Errorf("reading Kbuild's rules: %w", err)
		}
		have := normalize(string(data))
		for _, t := range texts {
			if !strings.Contains(have, normalize(t)) {
				return fmt.Errorf("scripts/%s differs from the Linux 6.1 rules the direct path mirrors (%.40s...)", name, t)
			}
		}
	}
	return nil
}

// normalize joins continued lines and collapses white space.
func normalize(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\\\n", " ")), " ")
}

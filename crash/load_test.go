package crash

import (
	"strings"
	"testing"
)

func TestLoadError(t *testing.T) {
	// Busybox lines are from testdata/load-errors.log; kmod's follow its format strings.
	tests := []struct {
		name   string
		output string
		kernel []string
		cause  string
		hint   string // a substring of the hint; "" means no hint
	}{
		{
			name:   "version magic",
			output: "insmod: can't insert '/m/kwother.ko': invalid module format\n",
			kernel: []string{
				"[    5.586698] kwother: module_layout: kernel tainted.\r",
				"[    5.586698] Disabling lock debugging due to kernel taint\r",
				"[    5.586698] kwother: version magic '6.1.192 mod_unload ' should be '6.1.0-56-amd64 SMP preempt mod_unload modversions '\r",
				"[    5.595927] kwother: version magic '6.1.192 mod_unload ' should be '6.1.0-56-amd64 SMP preempt mod_unload modversions '\r",
			},
			cause: `version magic mismatch: the module is for "6.1.192 mod_unload", the guest kernel is "6.1.0-56-amd64 SMP preempt mod_unload modversions"`,
			hint:  "rebuild the module against the guest kernel's build tree",
		},
		{
			name:   "version magic, kmod, kmsg lines",
			output: "insmod: ERROR: could not insert module /tmp/kwother.ko: Invalid module format\n",
			kernel: []string{"kwother: version magic '6.1.192 mod_unload ' should be '6.1.0-56-amd64 SMP preempt mod_unload modversions '"},
			cause:  `version magic mismatch: the module is for "6.1.192 mod_unload", the guest kernel is "6.1.0-56-amd64 SMP preempt mod_unload modversions"`,
			hint:   "rebuild",
		},
		{
			name:   "symbol version",
			output: "insmod: can't insert '/m/kwbadcrc.ko': Invalid argument\n",
			kernel: []string{
				"kwcrash: loading out-of-tree module taints kernel.",
				"kwcrash: module verification failed: signature and/or required key missing - tainting kernel",
				"kwcrash: disagrees about version of symbol _printk",
				"kwcrash: Unknown symbol _printk (err -22)",
			},
			cause: "the module disagrees about the version of _printk (it was built against another build of this kernel)",
			hint:  "rebuild",
		},
		{
			name:   "unknown symbol",
			output: "insmod: can't insert '/m/kwsym.ko': unknown symbol in module, or unknown parameter\n",
			kernel: []string{"kwsym: Unknown symbol kw_missing_function (err -2)", "kwsym: Unknown symbol kw_missing_function (err -2)"},
			cause:  "unknown symbol kw_missing_function",
			hint:   `MODULE_LICENSE("GPL")`,
		},
		{
			name:   "unknown symbols",
			output: "insmod: ERROR: could not insert module kwsym.ko: Unknown symbol in module\n",
			kernel: []string{"kwsym: Unknown symbol kw_a (err -2)", "kwsym: Unknown symbol kw_b (err -2)", "kwsym: Unknown symbol kw_a (err -2)"},
			cause:  "unknown symbol kw_a, kw_b",
			hint:   "load the module that exports it first",
		},
		{
			name:   "unknown symbol without kernel lines",
			output: "insmod: ERROR: could not insert module kwsym.ko: Unknown symbol in module\n",
			cause:  "unknown symbol or parameter, or the module's init returned -ENOENT",
			hint:   "Unknown symbol",
		},
		{
			name:   "namespace",
			output: "insmod: ERROR: could not insert module kwns.ko: Invalid parameters\n",
			kernel: []string{"kwns: module uses symbol (usb_stor_probe1) from namespace USB_STORAGE, but does not import it."},
			cause:  "the module uses usb_stor_probe1 from namespace USB_STORAGE without importing it",
			hint:   "MODULE_IMPORT_NS(USB_STORAGE)",
		},
		{
			name:   "unsigned, busybox",
			output: "insmod: can't insert '/m/kwwarn.ko': Key was rejected by service\n",
			kernel: []string{"[    4.855448] Loading of unsigned module is rejected\r", "[    4.859390] Loading of unsigned module is rejected\r"},
			cause:  "the guest kernel only loads signed modules and rejected this unsigned module",
			hint:   "module.sig_enforce=0",
		},
		{
			name:   "unknown key, no kernel lines",
			output: "insmod: ERROR: could not insert module kwwarn.ko: Required key not available\n",
			cause:  "the guest kernel only loads signed modules and rejected this one",
			hint:   "module.sig_enforce=0",
		},
		{
			name:   "lockdown",
			output: "insmod: ERROR: could not insert module kwwarn.ko: Operation not permitted\n",
			kernel: []string{"Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7"},
			cause:  "kernel lockdown forbids loading unsigned modules",
			hint:   "lockdown=none",
		},
		{
			name:   "bad parameter value",
			output: "insmod: can't insert '/m/kwnodev.ko': Invalid argument\n",
			kernel: []string{"kwnodev: `abc' invalid for parameter `count'", "kwnodev: `abc' invalid for parameter `count'"},
			cause:  `invalid value "abc" for parameter count`,
			hint:   "modinfo -p",
		},
		{
			name:   "unknown parameter",
			output: "insmod: ERROR: could not insert module kwnodev.ko: Unknown symbol in module\n",
			kernel: []string{"kwnodev: Unknown parameter `cuont'"},
			cause:  "unknown parameter cuont",
			hint:   "modinfo -p",
		},
		{
			name:   "invalid parameters, kmod",
			output: "insmod: ERROR: could not insert module kwnodev.ko: Invalid parameters\n",
			cause:  "invalid module parameters, or the module's init returned -EINVAL",
			hint:   "module_init",
		},
		{
			name:   "already loaded, busybox",
			output: "insmod: can't insert '/m/kwwarn.ko': File exists\n",
			cause:  "the module is already loaded",
			hint:   "rmmod it first",
		},
		{
			name:   "already loaded, modprobe",
			output: "modprobe: ERROR: could not insert 'kwwarn': Module already in kernel\n",
			cause:  "the module is already loaded",
			hint:   "rmmod it first",
		},
		{
			name:   "init error, busybox",
			output: "insmod: can't insert '/m/kwnodev.ko': No such device\n",
			kernel: []string{"[   31.026660] kwnodev: no device found\r", "[   31.148259] kwnodev: no device found\r"},
			cause:  "the module's init failed with -ENODEV (No such device)",
			hint:   "module_init returned an error",
		},
		{
			name:   "init error, kmod",
			output: "insmod: ERROR: could not insert module kwnodev.ko: Operation not permitted\n",
			cause:  "the module's init failed with -EPERM (Operation not permitted)",
			hint:   "module_init returned an error",
		},
		{
			name:   "carriage return: a line rewritten in place",
			output: "loading...\rinsmod: can't insert '/m/kwnodev.ko': No such device\r\n",
			cause:  "the module's init failed with -ENODEV (No such device)",
			hint:   "module_init returned an error",
		},
		{
			name:   "kernel-internal init error",
			output: "insmod: can't insert 'kwx.ko': Unknown error 524\n",
			cause:  "the module's init failed with -ENOTSUPP (Unknown error 524)",
			hint:   "module_init returned an error",
		},
		{
			name:   "init crashed",
			output: "Killed\n",
			cause:  "insmod died: the module's init crashed the kernel",
			hint:   "crash report",
		},
		{
			name:   "in use, busybox",
			output: "rmmod: can't unload module 'kwexport': Resource temporarily unavailable\n",
			cause:  "module kwexport is in use",
			hint:   "lsmod",
		},
		{
			name:   "in use by, kmod",
			output: "rmmod: ERROR: Module kwexport is in use by: kwuser\n",
			cause:  "module kwexport is in use by kwuser",
			hint:   "lsmod",
		},
		{
			name:   "in use, kmod",
			output: "rmmod: ERROR: Module kwexport is in use\n",
			cause:  "module kwexport is in use",
			hint:   "lsmod",
		},
		{
			name:   "stuck after a crashed init, busybox",
			output: "rmmod: can't unload module 'kwcrash': Device or resource busy\n",
			cause:  "module kwcrash cannot be unloaded: its init crashed or is still running, or it has no module_exit",
			hint:   "restart the VM",
		},
		{
			name:   "stuck, kmod",
			output: "rmmod: ERROR: could not remove 'kwcrash': Device or resource busy\nrmmod: ERROR: could not remove module kwcrash: Device or resource busy\n",
			cause:  "module kwcrash cannot be unloaded: its init crashed or is still running, or it has no module_exit",
			hint:   "module_exit",
		},
		{
			name:   "not loaded, busybox",
			output: "rmmod: can't unload module 'kwnothere': No such file or directory\n",
			cause:  "module kwnothere is not loaded",
		},
		{
			name:   "not loaded, kmod",
			output: "rmmod: ERROR: Module kwnothere is not currently loaded\n",
			cause:  "module kwnothere is not loaded",
		},
		{
			name:   "not loaded before a failing insmod",
			output: "rmmod: can't unload module 'kwnodev': No such file or directory\ninsmod: can't insert '/m/kwnodev.ko': No such device\n",
			cause:  "the module's init failed with -ENODEV (No such device)",
			hint:   "module_init",
		},
		{
			name:   "in use before an insmod that then fails",
			output: "rmmod: can't unload module 'kwexport': Resource temporarily unavailable\ninsmod: can't insert '/m/kwexport.ko': File exists\n",
			cause:  "module kwexport is in use",
			hint:   "lsmod",
		},
		{
			name:   "informational kernel lines are no cause",
			output: "insmod: can't insert '/m/kwnodev.ko': No such device\n",
			kernel: []string{"kwnodev: loading out-of-tree module taints kernel.", "kwnodev: module verification failed: signature and/or required key missing - tainting kernel"},
			cause:  "the module's init failed with -ENODEV (No such device)",
			hint:   "module_init",
		},
		{
			name:   "something else",
			output: "sh: insmod: not found\n",
			cause:  "sh: insmod: not found",
		},
		{
			name:  "nothing",
			cause: "failed without an error message",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cause, hint := LoadError(tt.output, tt.kernel)
			if cause != tt.cause {
				t.Errorf("cause = %q, want %q", cause, tt.cause)
			}
			if (tt.hint == "") != (hint == "") || !strings.Contains(hint, tt.hint) {
				t.Errorf("hint = %q, want one containing %q", hint, tt.hint)
			}
			if strings.Contains(cause, "\n") || strings.Contains(hint, "\n") {
				t.Errorf("cause or hint spans lines: %q / %q", cause, hint)
			}
		})
	}
}

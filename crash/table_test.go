package crash

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		line string
		want Severity
	}{
		// Fatal.
		{"Kernel panic - not syncing: Fatal exception", Fatal},
		{"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009", Fatal},
		{"Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", Fatal},
		{"---[ end Kernel panic - not syncing: Fatal exception ]---", Fatal},
		{"PANIC: double fault, error_code: 0x0", Fatal},
		{"watchdog: Watchdog detected hard LOCKUP on cpu 1", Fatal},

		// "BUG:" reports after which the task carries on.
		{"BUG: memory leak", Warning},
		{"BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580", Warning},
		{"BUG: Invalid wait context", Warning},
		{"BUG: held lock freed!", Warning},
		{"BUG: bad unlock balance detected!", Warning},
		{"BUG: insmod/95 still has locks held!", Warning},
		{"BUG: lock held when returning to user space!", Warning},

		// Oops.
		{"BUG: kernel NULL pointer dereference, address: 0000000000000000", Oops},
		{"BUG: unable to handle kernel NULL pointer dereference at 0000000000000008", Oops},
		{"BUG: unable to handle page fault for address: ffffffffc044a3c8", Oops},
		{"BUG: unable to handle kernel paging request at ffffffffc044a3c8", Oops},
		{"BUG: KASAN: slab-out-of-bounds in kwkasan_init+0x2a/0x50 [kwkasan]", Oops},
		{"BUG: KFENCE: use-after-free read in kwkfence_init+0x2a/0x50 [kwkfence]", Oops},
		{"BUG: KCSAN: data-race in kwrace_work / kwrace_work", Oops},
		{"BUG: KMSAN: uninit-value in kwkmsan_init+0x2a/0x50 [kwkmsan]", Oops},
		{"watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [insmod:102]", Oops},
		{"BUG: spinlock lockup suspected on CPU#0, insmod/95", Oops},
		{"BUG: spinlock already unlocked on CPU#0, insmod/95", Oops},
		{"BUG: spinlock recursion on CPU#0, insmod/95", Oops},
		{"BUG: scheduling while atomic: insmod/99/0x00000002", Oops},
		{"BUG: using smp_processor_id() in preemptible [00000000] code: insmod/95", Oops},
		{"BUG: using __this_cpu_read() in preemptible [00000000] code: insmod/95", Oops},
		{"BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!", Oops},
		{"BUG: workqueue leaked lock or atomic: kworker/0:1/0x00000000/25", Oops},
		{"BUG: Bad page state in process insmod  pfn:0b2d4", Oops},
		{"BUG: Bad page map in process insmod  pte:8000000002c71067 pmd:02c6e067", Oops},
		{"BUG: Bad rss-counter state mm:00000000ab12cd34 type:MM_ANONPAGES val:1", Oops},
		{"BUG: stack guard page was hit at 00000000c2e4bd27 (stack is 000000007e2a8c0e..00000000a5c1c8a3)", Oops},
		{"kernel BUG at /tmp/crashfix/mods/kwbug.c:6!", Oops},
		{"kernel BUG at rust/helpers/bug.c:7!", Oops},
		{"Kernel BUG at ffffffffc0356015 [verbose debug info unavailable]", Oops},
		{"BUG kmalloc-64 (Tainted: G      D W  OEL    ): Object already free", Oops},
		{"Oops: 0002 [#1] PREEMPT SMP NOPTI", Oops},
		{"Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", Oops},
		{"invalid opcode: 0000 [#4] PREEMPT SMP NOPTI", Oops},
		{"general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#3] PREEMPT SMP NOPTI", Oops},
		{"general protection fault: 0000 [#1] PREEMPT SMP NOPTI", Oops},
		{"stack segment: 0000 [#1] PREEMPT SMP NOPTI", Oops},
		{"divide error: 0000 [#5] PREEMPT SMP NOPTI", Oops},
		{"divide_error: 0000 [#1] SMP", Oops},
		{"int3: 0000 [#1] PREEMPT SMP NOPTI", Oops},
		{"Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000", Oops},
		{"Unable to handle kernel paging request at virtual address ffff800008a1c000", Oops},
		{"Unable to handle kernel access to user memory outside uaccess routines at virtual address 0000000000000008", Oops},
		{"Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP", Oops},
		{"Unhandled fault: page domain fault (0x01b) at 0x00000000", Oops},
		{"Alignment trap: not handling instruction e1953f9f at [<c02b4b2c>]", Oops},
		{"rust_kernel: panicked at 'attempt to divide by zero', /tmp/crashfix/rust/kwrust.rs:13:5", Oops},
		{"rust_kernel: panicked at drivers/android/binder/node.rs:877:13:", Oops},
		{"UBSAN: array-index-out-of-bounds in /tmp/x/kwubsan.c:9:9", Oops},
		{"UBSAN: shift-out-of-bounds in /tmp/x/kwubsan.c:12:13", Oops},
		{"VFS: Busy inodes after unmount of tmpfs (tmpfs)", Oops},
		{"VFS: Close: file count is 0", Oops},
		{"unregister_netdevice: waiting for kw0 to become free. Usage count = 2", Oops},

		// Warnings.
		{"WARNING: CPU: 0 PID: 90 at /tmp/crashfix/mods/kwwarn.c:6 kwwarn_init+0x5/0x1000 [kwwarn]", Warning},
		{"WARNING: kernel/foo.c:12 at kwwarn_init+0x5/0x1000 [kwwarn], CPU#0: insmod/90", Warning},
		{"WARNING: possible circular locking dependency detected", Warning},
		{"WARNING: possible recursive locking detected", Warning},
		{"WARNING: inconsistent lock state", Warning},
		{"WARNING: possible irq lock inversion dependency detected", Warning},
		{"WARNING: suspicious RCU usage", Warning},
		{"WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected", Warning},
		{"WARNING: bad unlock balance detected!", Warning},
		{"WARNING: held lock freed!", Warning},
		{"WARNING: Nested lock was not taken", Warning},
		{"refcount_t: underflow; use-after-free.", Warning},
		{"refcount_t: saturated; leaking memory.", Warning},
		{"list_add corruption. prev->next should be next (ffffffffc05dd000), but was 0000000000000000. (prev=ffffffffc05dd000).", Warning},
		{"list_add double add: new=ffffffffc05dd3c0, prev=ffffffffc05dd000, next=ffffffffc05dd3c0.", Warning},
		{"list_del corruption, ffffffffc05dd3c0->next is LIST_POISON1 (dead000000000100)", Warning},
		{"INFO: task insmod:105 blocked for more than 120 seconds.", Warning},
		{"rcu: INFO: rcu_preempt self-detected stall on CPU", Warning},
		{"rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", Warning},
		{"INFO: rcu_tasks detected stalls on tasks:", Warning},
		{"INFO: trying to register non-static key.", Warning},

		// Suppressed.
		{"kwwarn: loading out-of-tree module taints kernel.", None},
		{"kwwarn: module verification failed: signature and/or required key missing - tainting kernel", None},
		{"int3: loading out-of-tree module taints kernel.", None}, // a module named like a header
		{"int3: module verification failed: signature and/or required key missing - tainting kernel", None},
		{"ODEBUG: free active (active state 0) object type: timer_list hint: kwtimer_fn+0x0/0x20 [kwtimer]", None},
		{"Boot_DEBUG: stage 2", None},
		{"traps: a.out[123] general protection fault ip:401126 sp:7ffd8a3c1e40 error:0 in a.out[401000+1000]", None},
		{"WARNING: /etc/ssh/moduli does not exist, using fixed modulus", None},
		{"WARNING: workqueue cpumask: online intersect > possible intersect", None},
		{"WARNING: The mand mount option has been deprecated and", None},
		{"WARNING: the mand mount option is being deprecated", None},
		{"WARNING: Unsupported flag value(s) of 0x8000000 in DT_FLAGS_1.", None},
		{"WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!", None},
		{"WARNING: fbcon: Driver 'bochs-drm' missed to adjust virtual screen size (0x0 vs. 1024x768)", None},
		{"WARNING: See https://kernel.org/doc/html/latest/admin-guide/hw-vuln/srso.html for mitigation options.", None},
		{"WARNING: kernel not compiled with CPU_SRSO.", None},
		{"EXT4-fs (vda): WARNING: mounting fs with errors, running e2fsck is recommended", None},
		{"XFS (vdb): WARNING: Reset corrupted AGFL on AG 0.", None},
		{"INFO: lockdep is turned off.", None},
		{"INFO: Stall ended before state dump start", None},
		{"INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.234 msecs", None},
		{"INFO: the interrupt handler took too long to run", None},
		{"INFO: recovery required on readonly filesystem.", None},
		{"ACPI_INFO: something", None},

		// Ordinary lines, including lines that look close.
		{"kwcrash: writing through a NULL pointer", None},
		{"warning: `prog' uses wireless extensions which will stop working for Wi-Fi 7 hardware; use nl80211", None},
		{"traps: a.out[123] trap divide error ip:401126 sp:7ffd8a3c1e40 error:0 in a.out[401000+1000]", None},
		{"traps: a.out[123] trap invalid opcode ip:401126 sp:7ffd8a3c1e40 error:0 in a.out[401000+1000]", None},
		{"------------[ cut here ]------------", None},
		{"---[ end trace 0000000000000000 ]---", None},
		{"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)", None},
		{"", None},

		// Prefixes are stripped first: console, log level, caller tag, raw /dev/kmsg, shell output, CR.
		{"[   48.660012] BUG: kernel NULL pointer dereference, address: 0000000000000000\r", Oops},
		{"<1>[   48.660012][  T132] BUG: kernel NULL pointer dereference, address: 0000000000000000", Oops},
		{"1,1234,48660012,-;BUG: kernel NULL pointer dereference, address: 0000000000000000", Oops},
		{"~ # [   48.660012] BUG: kernel NULL pointer dereference, address: 0000000000000000", Oops},
		{"[    4.717501] kwwarn: loading out-of-tree module taints kernel.\r", None},
	}
	for _, tt := range tests {
		if got := Classify(tt.line); got != tt.want {
			t.Errorf("Classify(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestClean(t *testing.T) {
	tests := []struct {
		line          string
		text          string
		marked, first bool
	}{
		{"[    4.977299] WARNING: CPU: 0\r", "WARNING: CPU: 0", true, true},
		{"[    4.981797]  <TASK>", " <TASK>", true, true},
		{"[   61.246175] \r", "", true, true},
		{"[   61.246175]", "", true, true},
		{"<4>[   12.345678][    C1] RIP: 0010:x+0x1/0x2", "RIP: 0010:x+0x1/0x2", true, true},
		{"~ # [    1.516067] input: ImExPS/2 Generic Explorer Mouse", "input: ImExPS/2 Generic Explorer Mouse", true, false},
		{"6,1234,4977299,-;WARNING: CPU: 0", "WARNING: CPU: 0", true, true},
		{"Killed\r", "Killed", false, false},
		{" do_one_initcall+0x59/0x220", " do_one_initcall+0x59/0x220", false, false},
	}
	for _, tt := range tests {
		got := clean(tt.line)
		if got != (cleaned{tt.text, tt.marked, tt.first}) {
			t.Errorf("clean(%q) = %+v, want {%q %v %v}", tt.line, got, tt.text, tt.marked, tt.first)
		}
	}
}

func TestSeverityString(t *testing.T) {
	for s, want := range map[Severity]string{None: "none", Warning: "warning", Oops: "oops", Fatal: "panic"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}

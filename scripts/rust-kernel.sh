#!/usr/bin/env bash
# Builds (once) a Rust-enabled Linux 6.1 kernel from Debian's linux-source-6.1 for kwatch's
# tests and the "Rust modules without NixOS" path, and prints the build tree's path.
# The tree is cached outside the clone, keyed by source version, toolchain and config,
# so a second run takes well under a second. Recipe: shared/docs/rust-kernel-feasibility.md.
set -euo pipefail

# The kernel's Rust must be Debian's rustc: a rustup rustc earlier on PATH cannot build it.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export RUSTC=/usr/bin/rustc BINDGEN=/usr/bin/bindgen HOSTRUSTC=/usr/bin/rustc
unset RUSTUP_TOOLCHAIN CARGO_HOME RUSTUP_HOME

src=/usr/src/linux-source-6.1.tar.xz
[ -f "$src" ] || { echo "rust-kernel: $src missing: apt-get install linux-source-6.1" >&2; exit 2; }

# Options on top of tinyconfig: serial console, initramfs, devtmpfs, modules, TCP/IP with
# the e1000 NIC built in (there is no modules dir for this kernel), ptys for SSH, Rust, and
# KUnit (with debugfs) so that a module's test suites run when it loads.
options="64BIT PRINTK PRINTK_TIME EARLY_PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD
RD_GZIP DEVTMPFS DEVTMPFS_MOUNT PROC_FS SYSFS MODULES MODULE_UNLOAD NET INET UNIX PACKET PCI
NETDEVICES ETHERNET NET_VENDOR_INTEL E1000 BINFMT_ELF BINFMT_SCRIPT FUTEX EPOLL MULTIUSER SHMEM
TMPFS UNIX98_PTYS SIGNALFD TIMERFD EVENTFD POSIX_TIMERS FILE_LOCKING BUG RUST KUNIT DEBUG_FS"
disabled="MODVERSIONS"

key=$( { dpkg-query -W -f='${Version}' linux-source-6.1; $RUSTC --version; $BINDGEN --version;
         clang --version | head -1; echo "$options" "$disabled"; } | sha256sum | cut -c1-12)
cache=${KWATCH_RUST_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kwatch/rust-kernel}
tree=$cache/$key/linux

# One build at a time: a second run waits for the first, then finds its tree
# (a build started beside another would remove the tree under it).
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

if [ -f "$cache/$key/done" ]; then
	echo "$tree"
	exit 0
fi

echo "rust-kernel: building a Rust-enabled 6.1 kernel in $tree (about 5 minutes on 2 cores)" >&2
rm -rf "$cache/$key"
mkdir -p "$cache/$key"
log=$cache/$key/build.log
step=$cache/$key/step
(
	cd "$cache/$key"
	echo "unpacking $src" >"$step"
	tar xf "$src"
	mv linux-source-6.1 linux
	cd linux
	echo configuring >"$step"
	make LLVM=1 tinyconfig
	./scripts/config $(printf -- '-e %s ' $options) $(printf -- '-d %s ' $disabled)
	make LLVM=1 olddefconfig
	grep -q '^CONFIG_RUST=y' .config
	grep -q '^CONFIG_KUNIT=y' .config
	echo compiling >"$step"
	make LLVM=1 -j"$(nproc)"
) >"$log" 2>&1 &
build=$!

# Progress on stderr while it builds: the elapsed time, the step and, while
# compiling, Kbuild's step lines ("  CC      kernel/fork.o") against the
# about $steps a build of this configuration prints (counted from one).
# On a terminal one line, rewritten; otherwise one line per step.
steps=1530
start=$SECONDS shown=""
elapsed() { printf '%dm%02ds' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
while kill -0 "$build" 2>/dev/null; do
	now=$(cat "$step" 2>/dev/null || true)
	if [ -t 2 ]; then
		line="rust-kernel: $(elapsed) $now"
		if [ "$now" = compiling ]; then
			done_steps=$(grep -c '^  [A-Z]' "$log" || true)
			pct=$((done_steps * 100 / steps))
			line="$line, $done_steps of about $steps Kbuild steps ($((pct > 99 ? 99 : pct))%)"
		fi
		printf '\r\033[K%s' "$line" >&2
	elif [ -n "$now" ] && [ "$now" != "$shown" ]; then
		echo "rust-kernel: $(elapsed) $now" >&2
	fi
	shown=$now
	sleep 1
done
[ -t 2 ] && printf '\r\033[K' >&2
wait "$build" || { echo "rust-kernel: build failed after $(elapsed), see $log" >&2; tail -20 "$log" >&2; exit 1; }
echo "rust-kernel: built in $(elapsed)" >&2
touch "$cache/$key/done"
echo "$tree"

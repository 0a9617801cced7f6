#!/usr/bin/env bash
# Installs the Debian packages kwatch's demo and tests need. Idempotent and
# quiet when everything is already there.
set -euo pipefail

pkgs=(
	# the QEMU guest: a kernel with modules, headers for Kbuild, the initramfs parts
	qemu-system-x86 linux-image-amd64 linux-headers-amd64 busybox-static dropbear-bin
	# the second kernel generation every end-to-end suite also runs on (compressed modules, BTF)
	linux-image-6.12-amd64 linux-headers-6.12-amd64 pahole
	openssh-sftp-server kmod cpio
	# building modules
	build-essential make git xz-utils
	# the editor-files test (compile_commands.json)
	clangd
	# kwatch gdb
	gdb
	# the Rust-enabled test kernel (scripts/rust-kernel.sh)
	linux-source-6.1 rustc rust-src bindgen clang llvm lld libclang-dev flex bison
	libelf-dev libssl-dev bc
	# the Nix path
	nix-bin
	# tests: module compression, script(1) for the host key prompt, the completion scripts
	zstd gzip bsdutils zsh fish
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "setup: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "setup: Go is missing: install Go 1.25 or newer (https://go.dev/dl) and rerun" >&2
	exit 1
fi

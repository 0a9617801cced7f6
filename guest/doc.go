// Package guest is the machine kwatch loads modules into: the VM process and
// its console (vm.go, qemu.go, initramfs.go), the SSH session to it (ssh.go),
// SFTP upload (sftp.go), module reload (module.go) and the kernel log stream
// from /dev/kmsg (kmsg.go).
package guest

// Package vm runs the guest's kernel in a QEMU process kwatch owns: its
// arguments and bzImage parsing (qemu.go), the generated initramfs (initramfs.go,
// cpio.go, elfdeps.go), and the VM's state and lifecycle (vm.go).
package vm

// Package ssh is kwatch's SSH client to a running Linux guest: one kept
// connection with keepalives (ssh.go), the kept shell for kwatch's own
// scripts (shell.go), keys (key.go), host keys and known_hosts (hostkey.go),
// SFTP upload into a private directory (sftp.go, uploads.go), and the Linux
// calls on top: module reload and holders (module.go, holders.go), the
// modules a module needs (deps.go) and the kernel log from /dev/kmsg
// (kmsg.go). It implements the session of package guest; starting and
// stopping a VM is package guest/vm. x/crypto/ssh is imported as xssh.
package ssh

// Package guest is the remote session to a running Linux machine: SSH
// commands (ssh.go), keys (key.go), host keys and known_hosts (hostkey.go),
// SFTP upload into a private directory (sftp.go),
// module reload and holders (module.go, holders.go) and the kernel log from
// /dev/kmsg (kmsg.go). Starting and stopping the VM is package guest/vm.
package guest

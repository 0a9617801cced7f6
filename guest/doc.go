// Package guest is the remote session to a running Linux machine: SSH
// commands (ssh.go), keys and known_hosts (key.go), SFTP upload (sftp.go),
// module reload and holders (module.go, holders.go) and the kernel log from
// /dev/kmsg (kmsg.go). Starting and stopping the VM is package guest/vm.
package guest

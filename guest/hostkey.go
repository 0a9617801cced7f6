package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// UnknownHostKeyError is a host key found in no known_hosts file: the user
// has to accept it (check its fingerprint) before kwatch connects.
type UnknownHostKeyError struct {
	Addr string // host:port as dialled
	Key  ssh.PublicKey
}

func (e *UnknownHostKeyError) Error() string {
	return fmt.Sprintf("the host key of %s is not known: %s key %s", e.Addr, e.Key.Type(), ssh.FingerprintSHA256(e.Key))
}

// hostKeyChangedError is a host key that differs from the one pinned in known_hosts.
type hostKeyChangedError struct {
	host string
	want knownhosts.KnownKey
}

func (e *hostKeyChangedError) Error() string {
	return fmt.Sprintf("host key of %s changed: if the host was reinstalled on purpose, delete line %d of %s (check the new key first)",
		e.host, e.want.Line, e.want.Filename)
}

// checkHostKey accepts a key found in kwatch's or the user's known_hosts and
// refuses a changed one. An unknown key is pinned with TrustNew, else refused
// as an *UnknownHostKeyError.
func (c *Client) checkHostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	var files []string
	for _, f := range append([]string{c.cfg.KnownHosts}, c.cfg.UserKnownHosts...) {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading %s: %w", f, err)
		}
	}
	if len(files) > 0 {
		check, err := knownhosts.New(files...)
		if err != nil {
			return fmt.Errorf("reading known_hosts: %w", err)
		}
		var keyErr *knownhosts.KeyError
		err = check(hostname, remote, key)
		if !errors.As(err, &keyErr) {
			return err // nil when the key is a known one
		}
		if len(keyErr.Want) > 0 {
			return &hostKeyChangedError{host: knownhosts.Normalize(hostname), want: keyErr.Want[0]}
		}
	}
	if !c.cfg.TrustNew {
		return &UnknownHostKeyError{Addr: hostname, Key: key}
	}
	return PinHostKey(c.cfg.KnownHosts, hostname, key)
}

// PinHostKey adds key for addr ("host:port") to the known_hosts file.
func PinHostKey(knownHosts, addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(knownHosts), 0o700); err != nil {
		return fmt.Errorf("pinning host key: %w", err)
	}
	f, err := os.OpenFile(knownHosts, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pinning host key: %w", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("pinning host key in %s: %w", knownHosts, err)
	}
	return f.Close()
}

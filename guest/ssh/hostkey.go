package ssh

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// UnknownHostKeyError is a host key found in no known_hosts file: the user
// has to accept it (check its fingerprint) before kwatch connects.
type UnknownHostKeyError struct {
	Addr string // host:port as dialled
	Key  xssh.PublicKey
}

func (e *UnknownHostKeyError) Error() string {
	return fmt.Sprintf("the host key of %s is not known: %s key %s", e.Addr, e.Key.Type(), xssh.FingerprintSHA256(e.Key))
}

// hostKeyChangedError is a host key that differs from the one pinned in
// known_hosts, or from the HostKeys expected (want is then empty).
type hostKeyChangedError struct {
	host string
	want knownhosts.KnownKey
}

func (e *hostKeyChangedError) Error() string {
	if e.want.Filename == "" {
		return fmt.Sprintf("%s presented a host key other than the one kwatch made for its VM: another machine answers on this port", e.host)
	}
	return fmt.Sprintf("host key of %s changed: if the host was reinstalled on purpose, delete line %d of %s (check the new key first)",
		e.host, e.want.Line, e.want.Filename)
}

// knownHosts returns a callback checking keys against kwatch's and the
// user's known_hosts files; nil when none of them exists yet.
func (c *Client) knownHosts() (xssh.HostKeyCallback, error) {
	var files []string
	for _, f := range append([]string{c.cfg.KnownHosts}, c.cfg.UserKnownHosts...) {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
	}
	if len(files) == 0 {
		return nil, nil
	}
	check, err := knownhosts.New(files...)
	if err != nil {
		return nil, &knownHostsError{err: err}
	}
	return check, nil
}

// checkHostKey accepts only the expected HostKeys when they are given. Else
// it accepts a key found in kwatch's or the user's known_hosts and refuses a
// changed one. An unknown key is pinned with TrustNew, else refused as an
// *UnknownHostKeyError.
func (c *Client) checkHostKey(hostname string, remote net.Addr, key xssh.PublicKey) error {
	if len(c.cfg.HostKeys) > 0 {
		for _, k := range c.cfg.HostKeys {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return &hostKeyChangedError{host: knownhosts.Normalize(hostname)}
	}
	check, err := c.knownHosts()
	if err != nil {
		return err
	}
	if check != nil {
		var keyErr *knownhosts.KeyError
		err := check(hostname, remote, key)
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

// hostKeyAlgorithms lists the host key algorithms to offer, in OpenSSH's
// order, but those of the keys known for the host first, as OpenSSH does:
// a host known by its ECDSA key is asked for that one, rather than for its
// Ed25519 key, which would then be refused as a changed key.
//
// x/crypto's default order puts RSA first, and dropbear 2022.83 offers RSA
// even without an RSA host key, then aborts the handshake ("Failed assertion
// (rsa.c:164)") when it is chosen: hence an explicit list.
func (c *Client) hostKeyAlgorithms() []string {
	all := []string{
		xssh.KeyAlgoED25519,
		xssh.KeyAlgoECDSA256, xssh.KeyAlgoECDSA384, xssh.KeyAlgoECDSA521,
		xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256,
	}
	known := map[string]bool{}
	if check, _ := c.knownHosts(); check != nil {
		// A key no host has makes the check list the host's known keys.
		probe, _ := xssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
		var keyErr *knownhosts.KeyError
		if errors.As(check(c.cfg.Addr, &net.TCPAddr{IP: net.IPv4zero}, probe), &keyErr) {
			for _, k := range keyErr.Want {
				known[k.Key.Type()] = true
			}
		}
	}
	first, rest := []string{}, []string{}
	for _, algo := range all {
		typ := algo
		if algo == xssh.KeyAlgoRSASHA512 || algo == xssh.KeyAlgoRSASHA256 {
			typ = xssh.KeyAlgoRSA
		}
		if known[typ] {
			first = append(first, algo)
		} else {
			rest = append(rest, algo)
		}
	}
	return append(first, rest...)
}

// PinHostKey adds key for addr ("host:port") to the known_hosts file.
func PinHostKey(knownHosts, addr string, key xssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(knownHosts), 0o700); err != nil {
		return fmt.Errorf("pinning host key: %w", err)
	}
	f, err := os.OpenFile(knownHosts, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pinning host key: %w", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	// A file edited by hand may lack its last newline: the key must not
	// join that line.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("pinning host key in %s: %w", knownHosts, err)
	}
	return f.Close()
}

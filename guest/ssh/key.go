package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

const keyName = "id_ed25519"

// LoadOrCreateKey returns kwatch's own SSH identity, stateDir/id_ed25519,
// creating it on first use, together with its authorized_keys line.
func LoadOrCreateKey(stateDir string) (xssh.Signer, []byte, error) {
	path := filepath.Join(stateDir, keyName)
	signer, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		signer, err = createKey(path)
	}
	if err != nil {
		return nil, nil, err
	}
	return signer, xssh.MarshalAuthorizedKey(signer.PublicKey()), nil
}

func readKey(path string) (xssh.Signer, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	signer, err := xssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parsing ssh key %s: %w (delete it to have kwatch make a new one)", path, err)
	}
	return signer, nil
}

// createKey writes a new ed25519 key to path. The key is written under a
// temporary name and linked into place, so that of two kwatch processes
// starting at the same moment one wins and the other reads the complete key.
func createKey(path string) (xssh.Signer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating ssh key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ssh key: %w", err)
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generating ssh key: %w", err)
	}
	block, err := xssh.MarshalPrivateKey(priv, "kwatch")
	if err != nil {
		return nil, fmt.Errorf("encoding ssh key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), keyName+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("creating ssh key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already: the key is never readable by others.
	if err := errors.Join(pem.Encode(tmp, block), tmp.Close()); err != nil {
		return nil, fmt.Errorf("writing ssh key %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return readKey(path) // a concurrent kwatch was faster: use its key
	} else if err != nil {
		return nil, fmt.Errorf("installing ssh key %s: %w", path, err)
	}
	if err := os.WriteFile(path+".pub", xssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, fmt.Errorf("writing ssh public key: %w", err)
	}
	return signer, nil
}

// LoadKey reads a user's private key for --identity. A passphrase-protected
// key is usable only through ssh-agent (SSH_AUTH_SOCK): kwatch never prompts.
func LoadKey(path string) (xssh.Signer, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ssh identity: %w", err)
	}
	signer, err := xssh.ParsePrivateKey(pemBytes)
	var encrypted *xssh.PassphraseMissingError
	if errors.As(err, &encrypted) {
		if signer, ok := agentSigner(encrypted.PublicKey); ok {
			return signer, nil
		}
		return nil, fmt.Errorf("%s: passphrase-protected keys are not supported: use an unencrypted key or ssh-agent", path)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing ssh identity %s: %w", path, err)
	}
	return signer, nil
}

// agentSigner finds pub among the keys of the running ssh-agent. The agent
// connection stays open for the life of the process, as the signer needs it.
func agentSigner(pub xssh.PublicKey) (xssh.Signer, bool) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if pub == nil || sock == "" {
		return nil, false
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, false
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil, false
	}
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
			return s, true
		}
	}
	conn.Close()
	return nil, false
}

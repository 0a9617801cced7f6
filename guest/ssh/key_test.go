package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested")
	signer, authorized, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "id_ed25519")
	info, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %o, want 600", keyPath, perm)
	}
	pemBytes, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(pemBytes); block == nil || block.Type != "OPENSSH PRIVATE KEY" {
		t.Errorf("%s is not an OpenSSH private key:\n%s", keyPath, pemBytes)
	}
	pub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, authorized) {
		t.Errorf("id_ed25519.pub = %q, want the authorized_keys line %q", pub, authorized)
	}
	if got, _, _, _, err := xssh.ParseAuthorizedKey(authorized); err != nil || !sameKey(got, signer.PublicKey()) {
		t.Errorf("authorized_keys line %q does not hold the signer's key (err %v)", authorized, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	again, _, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(again.PublicKey(), signer.PublicKey()) {
		t.Error("second LoadOrCreateKey made a new key instead of loading the first")
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	keys := make([]xssh.PublicKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			s, _, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = s.PublicKey()
		})
	}
	wg.Wait()
	for i, k := range keys {
		if k == nil || !sameKey(k, keys[0]) {
			t.Fatalf("LoadOrCreateKey %d returned another key than the first", i)
		}
	}
	_, authorized, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := os.ReadFile(filepath.Join(dir, "id_ed25519.pub")); !bytes.Equal(pub, authorized) {
		t.Errorf("id_ed25519.pub = %q does not match the key in use %q", pub, authorized)
	}
}

func TestLoadOrCreateKeyCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateKey(dir)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadOrCreateKey with a corrupt key: error %v, want one naming %s", err, path)
	}
}

func TestLoadKey(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	plain := writeKey(t, filepath.Join(dir, "plain"), priv, "")
	encrypted := writeKey(t, filepath.Join(dir, "encrypted"), priv, "secret")
	want, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		path    string
		wantErr []string // substrings of the error; nil = success
	}{
		{"unencrypted", plain, nil},
		{"encrypted without agent", encrypted, []string{encrypted, "passphrase-protected keys are not supported: use an unencrypted key or ssh-agent"}},
		{"missing", filepath.Join(dir, "nope"), []string{filepath.Join(dir, "nope")}},
		{"not a key", writeFile(t, filepath.Join(dir, "junk"), "junk"), []string{filepath.Join(dir, "junk")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadKey(tt.path)
			if tt.wantErr == nil {
				if err != nil || !sameKey(got.PublicKey(), want.PublicKey()) {
					t.Fatalf("LoadKey(%s) = %v, want the key", tt.path, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadKey(%s) succeeded, want an error", tt.path)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("LoadKey(%s) error %q does not contain %q", tt.path, err, s)
				}
			}
		})
	}
}

// TestLoadKeyAgent checks that a passphrase-protected key is used through a
// real ssh-agent that holds it.
func TestLoadKeyAgent(t *testing.T) {
	if _, err := exec.LookPath("ssh-agent"); err != nil {
		t.Skip("no ssh-agent")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	startProc(t, exec.Command("ssh-agent", "-D", "-a", sock))
	conn := dialUnix(t, sock)
	defer conn.Close()

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.NewClient(conn).Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)

	signer, err := LoadKey(writeKey(t, filepath.Join(dir, "held"), priv, "secret"))
	if err != nil {
		t.Fatalf("LoadKey of an encrypted key held by ssh-agent: %v", err)
	}
	want, _ := xssh.NewSignerFromKey(priv)
	if !sameKey(signer.PublicKey(), want.PublicKey()) {
		t.Error("LoadKey returned another key than the one in the file")
	}
	data := []byte("challenge")
	sig, err := signer.Sign(rand.Reader, data)
	if err != nil {
		t.Fatalf("signing through the agent: %v", err)
	}
	if err := want.PublicKey().Verify(data, sig); err != nil {
		t.Errorf("agent signature does not verify: %v", err)
	}

	notHeld := writeKey(t, filepath.Join(dir, "not-held"), other, "secret")
	if _, err := LoadKey(notHeld); err == nil || !strings.Contains(err.Error(), "passphrase-protected") {
		t.Errorf("LoadKey of an encrypted key the agent does not hold: error %v, want the passphrase error", err)
	}
}

func dialUnix(t *testing.T, sock string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeKey(t *testing.T, path string, priv ed25519.PrivateKey, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = xssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = xssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, string(pem.EncodeToMemory(block)))
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameKey(a, b xssh.PublicKey) bool {
	return bytes.Equal(a.Marshal(), b.Marshal())
}

package ssh

import (
	"os"
	"path/filepath"
	"testing"
)

func TestForgetHost(t *testing.T) {
	p := filepath.Join(t.TempDir(), "known_hosts")
	lines := "[127.0.0.1]:2222 ssh-ed25519 AAAA1\n[127.0.0.1]:3333 ssh-ed25519 AAAA2\nexample.com ssh-ed25519 AAAA3\n"
	if err := os.WriteFile(p, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ForgetHost(p, "127.0.0.1:2222"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if want := "[127.0.0.1]:3333 ssh-ed25519 AAAA2\nexample.com ssh-ed25519 AAAA3\n"; string(b) != want {
		t.Errorf("known_hosts is now %q, want %q", b, want)
	}
	if err := ForgetHost(filepath.Join(t.TempDir(), "none"), "x:22"); err != nil {
		t.Errorf("a missing known_hosts: %v", err)
	}
}

package machine

import (
	"os"
	"path/filepath"
	"testing"

	"kwatch/guest/ssh"
)

// --ssh and --identity are filled in from ~/.ssh/config as ssh does, the
// command line winning.
func TestSSHTarget(t *testing.T) {
	home := t.TempDir()
	key := filepath.Join(home, ".ssh", "lab_key")
	if _, _, err := ssh.LoadOrCreateKey(filepath.Join(home, "k")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(home, "k", "id_ed25519"), key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(`Host lab
  HostName 10.1.2.3
  Port 2200
  User dev
  IdentityFile ~/.ssh/missing
  IdentityFile %d/.ssh/lab_key
Host v6
  HostName ::1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, user, addr string
		keys           int
	}{
		{"host", "root", "host:22", 0},
		{"me@host:2222", "me", "host:2222", 0},
		{"127.0.0.1:10022", "root", "127.0.0.1:10022", 0},
		{"lab", "dev", "10.1.2.3:2200", 1},        // all from ~/.ssh/config
		{"root@lab:22", "root", "10.1.2.3:22", 1}, // the command line wins
		{"v6", "root", "[::1]:22", 0},
	}
	for _, tt := range tests {
		cfg, err := sshTarget(Options{Target: tt.in, StateDir: t.TempDir(), Home: home})
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if cfg.User != tt.user || cfg.Addr != tt.addr || len(cfg.Signers) != tt.keys {
			t.Errorf("%s: got %s@%s with %d keys, want %s@%s with %d", tt.in, cfg.User, cfg.Addr, len(cfg.Signers), tt.user, tt.addr, tt.keys)
		}
		if cfg.TrustNew || len(cfg.UserKnownHosts) == 0 || cfg.UserKnownHosts[0] != filepath.Join(home, ".ssh", "known_hosts") {
			t.Errorf("%s: TrustNew %v, UserKnownHosts %v; want the user's known_hosts and no trust on first use", tt.in, cfg.TrustNew, cfg.UserKnownHosts)
		}
	}
	for _, bad := range []string{"host:port", "me@", ":22"} {
		if _, err := sshTarget(Options{Target: bad, StateDir: t.TempDir(), Home: home}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

package ssh

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// A pinned key is known afterwards, whatever the file ended with.
func TestPinHostKey(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	for _, tt := range []struct{ name, before string }{
		{"new file", ""},
		{"after a line", "other.example " + string(xssh.MarshalAuthorizedKey(testHostKey))},
		{"after a line without its newline", "# edited by hand"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kh := filepath.Join(t.TempDir(), "known_hosts")
			if tt.before != "" {
				if err := os.WriteFile(kh, []byte(tt.before), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := PinHostKey(kh, "127.0.0.1:2222", testHostKey); err != nil {
				t.Fatal(err)
			}
			check, err := knownhosts.New(kh)
			if err == nil {
				err = check("127.0.0.1:2222", remote, testHostKey)
			}
			if err != nil {
				b, _ := os.ReadFile(kh)
				t.Errorf("the pinned key is not known: %v; known_hosts:\n%s", err, b)
			}
		})
	}
}

// A known_hosts line kwatch cannot read is named in one line of text, even
// when it holds control characters.
func TestKnownHostsErrorPrintable(t *testing.T) {
	for _, tt := range []struct{ name, content string }{
		{"bad base64", "[127.0.0.1]:22 ssh-ed25519 not-base64!\n"},
		// The key's blob names its algorithm as "\r4\xd3M4...".
		{"control characters in the key's algorithm", "host ssh-ed25519 AAAAIA000000000000000000000000000000000000000000\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kh := filepath.Join(t.TempDir(), "known_hosts")
			if err := os.WriteFile(kh, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := (&Client{cfg: Config{KnownHosts: kh}}).knownHosts()
			if err == nil || !strings.Contains(err.Error(), kh+":1") || strings.ContainsFunc(err.Error(), unicode.IsControl) {
				t.Errorf("error %q: want one naming %s:1, without control characters", err, kh)
			}
		})
	}
}

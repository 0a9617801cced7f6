package guest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"kwatch/proc"
)

// HostPublicKeys returns the public halves of the host keys EnsureHostKey
// made in stateDir: a VM booted with them must present one of them, which
// pins exactly that key (SSHConfig.HostKeys) whatever port it answers on.
func HostPublicKeys(stateDir string) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for _, typ := range hostKeyTypes {
		p := filepath.Join(stateDir, hostKeyName(typ))
		var out, errOut bytes.Buffer
		cmd := exec.Command("dropbearkey", "-y", "-f", p)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := proc.Run(context.Background(), cmd); err != nil {
			return nil, fmt.Errorf("reading the guest's host key %s: %w: %s", p, err, bytes.TrimSpace(errOut.Bytes()))
		}
		// dropbearkey prints a header, then the key in authorized_keys format.
		for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
			if k, _, _, _, err := ssh.ParseAuthorizedKey(line); err == nil {
				keys = append(keys, k)
				break
			}
		}
	}
	if len(keys) != len(hostKeyTypes) {
		return nil, fmt.Errorf("dropbearkey -y printed no public key for the host keys in %s", stateDir)
	}
	return keys, nil
}

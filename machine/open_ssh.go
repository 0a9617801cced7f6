package machine

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"kwatch/guest/ssh"
	"kwatch/sshconfig"
)

// sshTarget parses --ssh [user@]host[:port] and --identity, filling in what
// they leave open from ~/.ssh/config the way ssh does (the command line
// wins; kwatch's default user is root, as loading modules needs it). The
// user's known_hosts files are trusted besides kwatch's own.
func sshTarget(o Options) (ssh.Config, error) {
	home := o.Home
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	target := o.Target
	cfg := ssh.Config{KnownHosts: filepath.Join(o.StateDir, "known_hosts"),
		UserKnownHosts: []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}}
	host, port := target, ""
	if i := strings.LastIndex(host, "@"); i >= 0 {
		cfg.User, host = host[:i], host[i+1:]
	}
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.Contains(host[i+1:], "]") {
		host, port = host[:i], host[i+1:]
		if _, err := strconv.Atoi(port); err != nil {
			return cfg, inputf("use --ssh [user@]host[:port]", "bad port in --ssh %q", target)
		}
	}
	if host == "" {
		return cfg, inputf("use --ssh [user@]host[:port]", "no host in --ssh %q", target)
	}
	var h sshconfig.Host
	confPath := filepath.Join(home, ".ssh", "config")
	if f, err := os.Open(confPath); err == nil {
		h, err = sshconfig.Lookup(f, host)
		f.Close()
		if err != nil {
			return cfg, inputf("fix the file, or move it aside", "reading %s: %v", confPath, err)
		}
	}
	if h.HostName != "" {
		host = h.HostName
	}
	port = cmp.Or(port, h.Port, "22")
	if _, err := strconv.Atoi(port); err != nil {
		return cfg, inputf("fix the Port line of "+confPath, "bad port %q for %s in %s", port, host, confPath)
	}
	cfg.User = cmp.Or(cfg.User, h.User, "root")
	cfg.Addr = net.JoinHostPort(strings.Trim(host, "[]"), port)

	var keys []string
	switch {
	case o.Identity != "":
		keys = []string{o.Identity}
	case len(h.IdentityFiles) > 0:
		for _, p := range h.IdentityFiles { // ssh skips the ones that do not exist
			if p = expandHome(p, home); fileExists(p) {
				keys = append(keys, p)
			}
		}
	default:
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", name); fileExists(p) {
				keys = []string{p}
				break
			}
		}
	}
	for _, k := range keys {
		signer, err := ssh.LoadKey(k)
		if err != nil {
			return cfg, inputf("pass --identity with an unencrypted private key", "%v", err)
		}
		cfg.Signers = append(cfg.Signers, signer)
	}
	return cfg, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// expandHome expands ~ and %d in an IdentityFile path, as ssh does.
func expandHome(p, home string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = home + p[1:]
	}
	return strings.ReplaceAll(strings.ReplaceAll(p, "%d", home), "%%", "%")
}

// trustNewHost runs connect. When that meets a host key no known_hosts file
// knows, the key's fingerprint is shown and the key is pinned only if the
// user accepts it (accept, from --accept-host-key, is that fingerprint, or "y"
// at a prompt on a terminal, asked on stderr), and connect runs again. A
// changed key is refused by connect itself, always.
func trustNewHost(knownHosts, accept string, stderr io.Writer, connect func() error) error {
	err := connect()
	var unknown *ssh.UnknownHostKeyError
	if !errors.As(err, &unknown) {
		return err
	}
	fp := xssh.FingerprintSHA256(unknown.Key)
	switch {
	case accept == fp:
	case accept != "":
		return inputf("check the key with the host's administrator; never accept one you did not check",
			"the host key of %s is %s, not the %s given with --accept-host-key", unknown.Addr, fp, accept)
	case !isTerminal(os.Stdin):
		return inputf("check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then pass --accept-host-key "+fp,
			"the host key of %s is not known (%s %s)", unknown.Addr, unknown.Key.Type(), fp)
	default:
		fmt.Fprintf(stderr, "The authenticity of host %s can't be established.\n%s key fingerprint is %s.\nPin this key in %s and connect? [y/N] ",
			unknown.Addr, unknown.Key.Type(), fp, knownHosts)
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return inputf("run again and answer y once you have checked the fingerprint", "host key of %s not accepted", unknown.Addr)
		}
	}
	if err := ssh.PinHostKey(knownHosts, unknown.Addr, unknown.Key); err != nil {
		return err
	}
	return connect()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

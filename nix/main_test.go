package nix

import (
	"os"
	"os/exec"
	"testing"
)

// testNixConfig lets root use nix here without a daemon, a sandbox or a cache.
const testNixConfig = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group ="

func TestMain(m *testing.M) {
	if os.Getenv("NIX_CONFIG") == "" {
		os.Setenv("NIX_CONFIG", testNixConfig)
	}
	os.Exit(m.Run())
}

// needNix skips tests that run nix in -short mode or where nix is missing.
func needNix(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs nix")
	}
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("nix is not installed")
	}
}

package nix

import (
	"os"
	"testing"

	"kwatch/nix/nixtest"
)

func TestMain(m *testing.M) {
	nixtest.SetConfig()
	os.Exit(m.Run())
}

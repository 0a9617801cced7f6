package ssh

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"kwatch/kmod"
)

// LoadDeps against the real Debian guest with the host's modules dir shared:
// a chain is loaded in order, a softdep that is no module is not fatal, what
// is loaded is not loaded again, and a missing module is a DepsError naming
// it and where kwatch looked.
func TestLoadDeps(t *testing.T) {
	c := bootGuest(t)
	ctx := testContext(t)
	loaded, err := c.LoadDeps(ctx, debianRelease, []string{"videodev"}, []string{"crypto-no-such-alias"})
	if err != nil || !slices.Equal(loaded, []string{"mc", "videodev"}) {
		t.Fatalf("LoadDeps(videodev) = %v, %v; want mc, videodev", loaded, err)
	}
	if loaded, err := c.LoadDeps(ctx, debianRelease, []string{"videodev"}, nil); err != nil || len(loaded) != 0 {
		t.Fatalf("LoadDeps again = %v, %v; want nothing loaded", loaded, err)
	}
	_, err = c.LoadDeps(ctx, debianRelease, []string{"mc", "no_such_module"}, nil)
	var de *DepsError
	if !errors.As(err, &de) || !errors.Is(err, kmod.ErrMissing) || de.Module != "no_such_module" ||
		!strings.Contains(err.Error(), "/lib/modules/"+debianRelease+"/modules.dep") {
		t.Fatalf("LoadDeps(no_such_module) = %v; want a DepsError naming it and modules.dep", err)
	}
}

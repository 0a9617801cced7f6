package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// version is what `kwatch --version` prints: the module version and the VCS
// revision go build stamped into the binary (go build -buildvcs, on by
// default in a git checkout), the commit time and whether the tree had
// uncommitted changes.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "kwatch (no build info: built without module support)"
	}
	vcs := map[string]string{}
	for _, s := range bi.Settings {
		if k, ok := strings.CutPrefix(s.Key, "vcs."); ok {
			vcs[k] = s.Value
		} else if s.Key == "vcs" {
			vcs["system"] = s.Value
		}
	}
	out := fmt.Sprintf("kwatch %s", bi.Main.Version)
	if rev := vcs["revision"]; rev != "" {
		out += fmt.Sprintf(" (%s %s", vcs["system"], rev)
		if t := vcs["time"]; t != "" {
			out += ", " + t
		}
		if vcs["modified"] == "true" {
			out += ", with uncommitted changes"
		}
		out += ")"
	} else {
		out += " (no VCS revision: built outside a git checkout or with -buildvcs=false)"
	}
	return out + " " + bi.GoVersion
}

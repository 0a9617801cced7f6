package nix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"kwatch/proc"
)

// DevEnv is a derivation's build environment, as `nix develop` would set it up.
type DevEnv struct {
	// Vars holds the shell variables of the environment: exported and plain
	// ones, with arrays joined by spaces.
	Vars map[string]string

	exported map[string]bool
}

// GetDevEnv asks `nix print-dev-env --json <installable>` for the build
// environment of a derivation. Nix builds the derivation's inputs first.
func (s Settings) GetDevEnv(ctx context.Context, installable string) (*DevEnv, error) {
	cmd := s.command("print-dev-env", "--json", installable)
	var stdout bytes.Buffer
	tail := &tailWriter{}
	cmd.Stdout = &stdout
	cmd.Stderr = tail
	if err := proc.Run(ctx, cmd); err != nil {
		return nil, nixError(ctx, "nix print-dev-env "+installable, err, tail)
	}
	var out struct {
		Variables map[string]struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"variables"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("reading the JSON of nix print-dev-env %s: %w", installable, err)
	}
	env := &DevEnv{Vars: map[string]string{}, exported: map[string]bool{}}
	for name, v := range out.Variables {
		var value string
		switch v.Type {
		case "exported", "var":
			err := json.Unmarshal(v.Value, &value)
			if err != nil {
				return nil, fmt.Errorf("reading variable %s of %s: %w", name, installable, err)
			}
			env.exported[name] = v.Type == "exported"
		case "array":
			var words []string
			if err := json.Unmarshal(v.Value, &words); err != nil {
				return nil, fmt.Errorf("reading array %s of %s: %w", name, installable, err)
			}
			value = strings.Join(words, " ")
		default: // associative arrays: nothing a make command line needs
			continue
		}
		env.Vars[name] = value
	}
	return env, nil
}

// Variables that belong to the nix build sandbox, not to the user's shell;
// `nix develop` leaves out the same ones.
var sandboxVars = map[string]bool{
	"BASHOPTS": true, "HOME": true, "NIX_BUILD_TOP": true, "NIX_ENFORCE_PURITY": true,
	"NIX_LOG_FD": true, "NIX_REMOTE": true, "PPID": true, "SHELL": true, "SHELLOPTS": true,
	"SSL_CERT_FILE": true, "TEMP": true, "TEMPDIR": true, "TERM": true, "TMP": true,
	"TMPDIR": true, "TZ": true, "UID": true,
}

// Environ returns the environment for running the derivation's build commands
// outside nix: its exported variables, PATH included, with HOME, TMPDIR and
// TERM taken from kwatch's own environment.
func (e *DevEnv) Environ() []string {
	var env []string
	for name, value := range e.Vars {
		if (e.exported[name] || name == "PATH") && !sandboxVars[name] {
			env = append(env, name+"="+value)
		}
	}
	for _, name := range []string{"HOME", "TMPDIR", "TERM"} {
		if value, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+value)
		}
	}
	sort.Strings(env)
	return env
}

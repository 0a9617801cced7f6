package main

import (
	"bytes"
	"fmt"
	"testing"

	"kwatch/builder"
)

// Every error that ends kwatch is written the same way: its message, then
// its hint if it has one, whichever package made it.
func TestExitCodeHints(t *testing.T) {
	build := &builder.Error{Err: fmt.Errorf("x"), Fix: "git add -N a.c"}
	for name, tt := range map[string]struct {
		err  error
		code int
		want string
	}{
		"usage":               {usagef("pass --kdir", "no kernel %s", "here"), 2, "kwatch: error: no kernel here\nkwatch: hint: pass --kdir\n"},
		"usage without hint":  {usagef("", "bad"), 2, "kwatch: error: bad\n"},
		"wrapped build error": {fmt.Errorf("setup: %w", build), 1, "kwatch: error: setup: build failed: x\nkwatch: hint: git add -N a.c\n"},
		"plain":               {fmt.Errorf("boom"), 1, "kwatch: error: boom\n"},
	} {
		var stderr bytes.Buffer
		if code := exitCode(tt.err, &stderr); code != tt.code || stderr.String() != tt.want {
			t.Errorf("%s: exit %d, stderr %q; want %d, %q", name, code, stderr.String(), tt.code, tt.want)
		}
	}
}

package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGDBArgs(t *testing.T) {
	tests := []struct {
		sock, want, err string
	}{
		{"/s/gdb.sock", "-chardev socket,path=/s/gdb.sock,server=on,wait=off,id=gdb0 -gdb chardev:gdb0", ""},
		{"/a,b/gdb.sock", "-chardev socket,path=/a,,b/gdb.sock,server=on,wait=off,id=gdb0 -gdb chardev:gdb0", ""},
		{"/" + strings.Repeat("x", 120) + "/gdb.sock", "", "use a shorter --state-dir"},
	}
	for _, tt := range tests {
		args, err := GDBArgs(tt.sock)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.sock, err, tt.err)
			}
			continue
		}
		if got := strings.Join(args, " "); err != nil || got != tt.want {
			t.Errorf("%s: got %q (%v), want %q", tt.sock, got, err, tt.want)
		}
	}
}

func TestQEMULauncherGDB(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "k"), filepath.Join(dir, "i")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, sock := range []string{"", filepath.Join(dir, "gdb.sock")} {
		cmd, err := QEMUConfig{Kernel: kernel, Initramfs: initrd, GDBSocket: sock}.Launcher()(2222, "tcg")
		if err != nil {
			t.Skipf("no qemu: %v", err)
		}
		got := strings.Join(cmd.Args, " ")
		want := "-chardev socket,path=" + sock + ",server=on,wait=off,id=gdb0 -gdb chardev:gdb0"
		if sock == "" && strings.Contains(got, "-gdb") || sock != "" && !strings.HasSuffix(got, want) {
			t.Errorf("socket %q: %s", sock, got)
		}
	}
}

package guest

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseKind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kind
		bad  bool
	}{
		{"qemu", QEMU, false},
		{"nix", Nix, false},
		{"ssh", SSH, false},
		{"", 0, true},
		{"QEMU", 0, true},
		{"kvm", 0, true},
	} {
		k, err := ParseKind(tc.in)
		if tc.bad {
			if err == nil || err.(*KindError).Hint() == "" {
				t.Errorf("ParseKind(%q) = %v, %v; want an error with a hint", tc.in, k, err)
			}
			continue
		}
		if err != nil || k != tc.want || k.String() != tc.in {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", tc.in, k, err, tc.want)
		}
	}
}

// A kind is kept by name in a VM's state file, and read back.
func TestKindJSON(t *testing.T) {
	b, err := json.Marshal(struct{ K Kind }{Nix})
	if err != nil || string(b) != `{"K":"nix"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	var v struct{ K Kind }
	if err := json.Unmarshal([]byte(`{"K":"qemu"}`), &v); err != nil || v.K != QEMU {
		t.Fatalf("unmarshal: %v, %v", v.K, err)
	}
	if err := json.Unmarshal([]byte(`{"K":"xen"}`), &v); err == nil {
		t.Fatal("unmarshal of an unknown kind succeeded")
	} else if _, hinted := err.(interface{ Hint() string }); hinted || strings.Contains(err.Error(), "--vm") {
		t.Errorf("a state file's unknown kind reads as a bad flag: %v", err)
	}
	// Older kwatch wrote "" for a record of no VM.
	if err := json.Unmarshal([]byte(`{"K":""}`), &v); err != nil || v.K != 0 {
		t.Fatalf("unmarshal of no kind: %v, %v", v.K, err)
	}
}

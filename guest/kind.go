package guest

import "fmt"

// Kind is how kwatch reaches the guest, chosen with --vm.
type Kind int

const (
	QEMU Kind = iota + 1 // a VM kwatch boots with QEMU from a host kernel
	Nix                  // a NixOS VM kwatch builds from the flake and boots
	SSH                  // an existing machine kwatch reaches over SSH
)

// Managed reports whether kwatch boots and stops the guest itself.
func (k Kind) Managed() bool { return k == QEMU || k == Nix }

var kindNames = map[Kind]string{QEMU: "qemu", Nix: "nix", SSH: "ssh"}

// ParseKind reads a --vm value: the one place a kind is a string.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if s == name {
			return k, nil
		}
	}
	return 0, &KindError{Value: s}
}

func (k Kind) String() string {
	if name, ok := kindNames[k]; ok {
		return name
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// MarshalText and UnmarshalText keep a kind as its name in a VM's state file.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// An empty name is no kind (older kwatch wrote "" for a record of no VM).
func (k *Kind) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*k = 0
		return nil
	}
	kind, err := ParseKind(string(b))
	if err != nil {
		return fmt.Errorf("unknown VM kind %q", b) // a state file's, not a flag's: no --vm hint
	}
	*k = kind
	return nil
}

// KindError is a --vm value that names no kind.
type KindError struct{ Value string }

func (e *KindError) Error() string { return fmt.Sprintf("unknown --vm %q", e.Value) }
func (e *KindError) Hint() string  { return "use --vm qemu, --vm nix or --vm ssh" }

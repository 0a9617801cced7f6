package ssh

import (
	"kwatch/guest"
	"reflect"
	"testing"
)

func TestParseModuleUse(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want guest.ModuleUse
	}{
		{"free", "refcnt 0\ninitstate live\n", guest.ModuleUse{Refcnt: 0, InitState: "live"}},
		{"not loaded", "refcnt \ninitstate \n", guest.ModuleUse{Refcnt: -1}},
		{"held by a module and a process", `refcnt 2
initstate live
holder kwuser
proc 1 init
lrwx------    1 root     root            64 Jan  1 00:00 0 -> /dev/console
proc 88 sleep
lr-x------    1 root     root            64 Jan  1 00:00 0 -> /dev/kwhold
l-wx------    1 root     root            64 Jan  1 00:00 1 -> /dev/pts/0
lrwx------    1 root     root            64 Jan  1 00:00 3 -> socket:[1234]
proc 90 cat
lr-x------    1 root     root            64 Jan  1 00:00 0 -> /dev/null
`, guest.ModuleUse{Refcnt: 2, InitState: "live", Holders: []string{"kwuser"},
			Openers: []string{"pid 88 (sleep) has /dev/kwhold open"}}},
		{"stuck in init", "refcnt 0\ninitstate coming\n", guest.ModuleUse{Refcnt: 0, InitState: "coming"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseModuleUse(tt.out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

package crash

import "testing"

func TestTaint(t *testing.T) {
	tests := []struct {
		value uint64
		want  string
	}{
		{0, ""},
		{1, "P"},
		{12288, "OE"},     // an unsigned out-of-tree module
		{640, "DW"},       // an oops and a warning
		{29344, "BDWOEL"}, // /proc/sys/kernel/tainted after testdata/slub-double-free.log
		{4097, "PO"},
		{1<<17 | 1<<16 | 1<<15 | 1<<14, "LKXT"},
		{1<<18 | 1<<19, "NJ"},
		{1 << 20, ""}, // unknown bits
		{1<<20 - 1, "PFSRMBUDAWCIOELKXTNJ"},
	}
	for _, tt := range tests {
		if got := Taint(tt.value); got != tt.want {
			t.Errorf("Taint(%d) = %q, want %q", tt.value, got, tt.want)
		}
	}
}

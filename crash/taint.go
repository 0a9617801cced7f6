package crash

import "strings"

// taintFlags are the kernel's taint letters by bit (kernel/panic.c
// taint_flags); N (TAINT_TEST) exists since 6.0 and J (TAINT_FWCTL) since 6.15.
const taintFlags = "PFSRMBUDAWCIOELKXTNJ"

// Taint decodes /proc/sys/kernel/tainted (a decimal number) into the letters
// the kernel prints, in bit order: 12288 is "OE", 640 is "DW". Unknown bits are
// left out.
func Taint(value uint64) string {
	var b strings.Builder
	for i := range len(taintFlags) {
		if value&(1<<i) != 0 {
			b.WriteByte(taintFlags[i])
		}
	}
	return b.String()
}

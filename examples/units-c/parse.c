// SPDX-License-Identifier: GPL-2.0
/* Sizes as people write them ("4096", "4K", "2M", "1G") in bytes. */

#include <linux/ctype.h>
#include <linux/errno.h>
#include <linux/limits.h>
#include <linux/overflow.h>

#include "units.h"

int units_parse(const char *s, u64 *bytes)
{
	unsigned int shift = 0;
	const char *digits = s;
	u64 n = 0;

	for (; isdigit(*s); s++) {
		if (check_mul_overflow(n, 10ULL, &n) ||
		    check_add_overflow(n, (u64)(*s - '0'), &n))
			return -ERANGE;
	}
	if (s == digits)
		return -EINVAL;
	switch (*s) {
	case 'K':
		shift = 10;
		s++;
		break;
	case 'M':
		shift = 20;
		s++;
		break;
	case 'G':
		shift = 30;
		s++;
		break;
	}
	if (*s)
		return -EINVAL;
	if (n > U64_MAX >> shift)
		return -ERANGE;
	*bytes = n << shift;
	return 0;
}

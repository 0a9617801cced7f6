// SPDX-License-Identifier: GPL-2.0
/* The counter, exported so that other modules can count too. */

#include <linux/atomic.h>
#include <linux/export.h>

#include "tally.h"

static atomic_long_t total;

unsigned long tally_add(unsigned long n)
{
	return atomic_long_add_return(n * TALLY_STEP, &total);
}
EXPORT_SYMBOL_GPL(tally_add);

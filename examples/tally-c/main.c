// SPDX-License-Identifier: GPL-2.0
/*
 * A module built from two objects that share a header (tally.h), one of
 * which exports a symbol: the shape of most real drivers. Change
 * TALLY_VERSION or TALLY_STEP in tally.h and save: both objects rebuild.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/stringify.h>

#include "tally.h"

static int __init tally_init(void)
{
	pr_info("version %d loaded, tally %lu\n", TALLY_VERSION, tally_add(1));
	return 0;
}

static void __exit tally_exit(void)
{
	pr_info("version %d unloaded, tally %lu\n", TALLY_VERSION, tally_add(0));
}

module_init(tally_init);
module_exit(tally_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION(__stringify(TALLY_VERSION));
MODULE_AUTHOR("kwatch");
MODULE_DESCRIPTION("kwatch example: two objects, a shared header and an exported symbol");

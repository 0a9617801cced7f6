// SPDX-License-Identifier: GPL-2.0
/*
 * A module with a KUnit suite (parse_test.c): on a kernel with CONFIG_KUNIT
 * the suite runs inside every insmod, and kwatch shows each case's result.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

#include "units.h"

#define UNITS_VERSION 1

static int __init units_init(void)
{
	u64 bytes;
	int err = units_parse("4K", &bytes);

	if (err)
		return err;
	pr_info("4K is %llu bytes (version %d)\n", bytes, UNITS_VERSION);
	return 0;
}

static void __exit units_exit(void)
{
}

module_init(units_init);
module_exit(units_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("kwatch");
MODULE_DESCRIPTION("kwatch example: a KUnit suite that runs on every save");

// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest module worth watching: it says which version of it was loaded
 * and unloaded. Bump HELLO_VERSION, save, and the guest's log shows the new one.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/stringify.h>

#define HELLO_VERSION 1

static int __init hello_init(void)
{
	pr_info("version %d loaded\n", HELLO_VERSION);
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("version %d unloaded\n", HELLO_VERSION);
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION(__stringify(HELLO_VERSION));
MODULE_AUTHOR("kwatch");
MODULE_DESCRIPTION("kwatch example: prints its version on load and unload");

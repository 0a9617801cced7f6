// SPDX-License-Identifier: GPL-2.0
/*
 * A misc device, /dev/printerfact: each open picks one printer fact and reading
 * returns it, so every `cat /dev/printerfact` shows a new one. Small enough to
 * edit while kwatch reloads it, big enough to have a file_operations to break.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/random.h>
#include <linux/string.h>
#include <linux/stringify.h>

#define PRINTERFACT_VERSION 1

static const char *const facts[] = {
	"The first laser printer was built at Xerox PARC in 1971 from a modified copier.\n",
	"Many colour laser printers add faint yellow dots that encode their serial number and the time.\n",
	"PC LOAD LETTER means: load letter-size paper into the paper cassette.\n",
	"Linux's parallel port printer driver can still report \"lp0 on fire\".\n",
	"A jammed Xerox printer whose driver source he could not get helped start Richard Stallman's free software movement.\n",
	"Dot-matrix printers build each character from dots struck by 9 or 24 pins.\n",
	"IPP, the Internet Printing Protocol, runs over HTTP on TCP port 631.\n",
	"CUPS started out as the Common UNIX Printing System.\n",
	"HP's ThinkJet, one of the first inkjet printers for home use, shipped in 1984.\n",
	"PostScript, which many printers speak, is a complete stack-based programming language.\n",
};

static int facts_limit;
module_param(facts_limit, int, 0444);
MODULE_PARM_DESC(facts_limit, "serve only the first N facts (default 0: all of them)");

static unsigned int nfacts(void)
{
	if (facts_limit > 0 && (unsigned int)facts_limit < ARRAY_SIZE(facts))
		return facts_limit;
	return ARRAY_SIZE(facts);
}

/* The fact is picked at open, so one open+read sequence sees one whole fact. */
static int printerfact_open(struct inode *inode, struct file *file)
{
	file->private_data = (void *)facts[get_random_u32() % nfacts()];
	return 0;
}

static ssize_t printerfact_read(struct file *file, char __user *buf,
				size_t count, loff_t *ppos)
{
	const char *fact = file->private_data;

	return simple_read_from_buffer(buf, count, ppos, fact, strlen(fact));
}

static const struct file_operations printerfact_fops = {
	.owner = THIS_MODULE,
	.open = printerfact_open,
	.read = printerfact_read,
};

static struct miscdevice printerfact_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "printerfact",
	.fops = &printerfact_fops,
	.mode = 0444,
};

static int __init printerfact_init(void)
{
	int err = misc_register(&printerfact_dev);

	if (err) {
		pr_err("registering /dev/printerfact failed: %d\n", err);
		return err;
	}
	pr_info("ready, %u facts (version %d)\n", nfacts(), PRINTERFACT_VERSION);
	return 0;
}

static void __exit printerfact_exit(void)
{
	misc_deregister(&printerfact_dev);
	pr_info("gone (version %d)\n", PRINTERFACT_VERSION);
}

module_init(printerfact_init);
module_exit(printerfact_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION(__stringify(PRINTERFACT_VERSION));
MODULE_AUTHOR("kwatch");
MODULE_DESCRIPTION("kwatch example: /dev/printerfact serves a random printer fact per open");

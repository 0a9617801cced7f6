// A misc device, /dev/kwfault: a process that keeps it open holds the module.
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#define KWFAULT_VERSION "1"
static const struct file_operations kwfault_fops = { .owner = THIS_MODULE };
static struct miscdevice kwfault_dev = { .minor = MISC_DYNAMIC_MINOR, .name = "kwfault", .fops = &kwfault_fops };
static int __init kwfault_init(void) { return misc_register(&kwfault_dev); }
static void __exit kwfault_exit(void) { misc_deregister(&kwfault_dev); }
module_init(kwfault_init);
module_exit(kwfault_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION(KWFAULT_VERSION);

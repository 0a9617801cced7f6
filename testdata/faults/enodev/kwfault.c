// init fails with -ENODEV: insmod fails, nothing crashes.
#include <linux/module.h>
static int __init m_init(void) { pr_info("kwfault: no device\n"); return -ENODEV; }
module_init(m_init);
MODULE_LICENSE("GPL");
MODULE_VERSION("enodev");

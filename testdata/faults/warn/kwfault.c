// A WARN_ON in init: a warning, the module loads and the guest stays fine.
#include <linux/module.h>
static int kwfault_trigger = 1;
static int __init kwfault_init(void) { WARN_ON(kwfault_trigger); return 0; }
static void __exit kwfault_exit(void) { }
module_init(kwfault_init);
module_exit(kwfault_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("warn");

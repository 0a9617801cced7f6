// A NULL pointer dereference in init: an oops, insmod is killed and the
// module stays stuck in "coming".
#include <linux/module.h>
static int *volatile kwfault_ptr;
static int __init kwfault_init(void) { *kwfault_ptr = 1; return 0; }
module_init(kwfault_init);
MODULE_LICENSE("GPL");
MODULE_VERSION("oops");

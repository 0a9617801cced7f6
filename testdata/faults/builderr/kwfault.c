// A build error: the compiler's line must be reported.
#include <linux/module.h>
static int x = ;
MODULE_LICENSE("GPL");

// A panic in init: with panic=-1 and -no-reboot, QEMU exits.
#include <linux/module.h>
#include <linux/panic.h>
static int __init m_init(void) { panic("kwatch test"); return 0; }
module_init(m_init);
MODULE_LICENSE("GPL");
MODULE_VERSION("panic");

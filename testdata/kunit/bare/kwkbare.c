// A KUnit suite that uses none of KUnit's functions, so that it builds for a
// kernel without KUnit too: the module has a suite that kernel cannot run.
#include <kunit/test.h>
#include <linux/module.h>

static void kw_nothing(struct kunit *test) { }

static struct kunit_case kw_cases[] = { KUNIT_CASE(kw_nothing), {} };
static struct kunit_suite kw_suite = { .name = "kwkbare", .test_cases = kw_cases };
kunit_test_suite(kw_suite);

static int __init kw_init(void) { pr_info("kwkbare: loaded\n"); return 0; }
static void __exit kw_exit(void) { }
module_init(kw_init);
module_exit(kw_exit);
MODULE_LICENSE("GPL");

// A KUnit suite whose second case oopses (a NULL pointer read) while
// KW_CRASH is 1; on 6.1 that keeps insmod waiting for KUnit's 300 s timeout.
#include <kunit/test.h>
#include <linux/module.h>

#define KW_CRASH 1

static void kw_first(struct kunit *test) { KUNIT_EXPECT_TRUE(test, true); }

static void kw_null(struct kunit *test)
{
	int zero = 0;
	int *volatile p = KW_CRASH ? NULL : &zero;

	KUNIT_EXPECT_EQ(test, *p, 0);
}

static void kw_third(struct kunit *test) { KUNIT_EXPECT_TRUE(test, true); }

static struct kunit_case kw_cases[] = {
	KUNIT_CASE(kw_first),
	KUNIT_CASE(kw_null),
	KUNIT_CASE(kw_third),
	{}
};

static struct kunit_suite kw_suite = { .name = "kwkcrash", .test_cases = kw_cases };
kunit_test_suite(kw_suite);

static int __init kw_init(void) { pr_info("kwkcrash: crash %d loaded\n", KW_CRASH); return 0; }
static void __exit kw_exit(void) { }
module_init(kw_init);
module_exit(kw_exit);
MODULE_LICENSE("GPL");

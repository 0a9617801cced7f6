// A KUnit suite with a passing, a failing, a skipped and a parameterised
// case; the tests set KW_BROKEN to 0 to fix the failures.
#include <kunit/test.h>
#include <linux/module.h>

#define KW_BROKEN 1

static int kw_double(int x) { return KW_BROKEN && x == 2 ? 5 : x * 2; }

static void kw_pass(struct kunit *test) { KUNIT_EXPECT_EQ(test, 1 + 1, 2); }

static void kw_double_two(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, kw_double(2), 4);
}

static void kw_skip(struct kunit *test) { kunit_skip(test, "not on this machine"); }

static const int kw_inputs[] = { 1, 2, 3 };
static void kw_desc(const int *x, char *desc) { snprintf(desc, KUNIT_PARAM_DESC_SIZE, "x=%d", *x); }
KUNIT_ARRAY_PARAM(kw_inputs, kw_inputs, kw_desc);

static void kw_double_each(struct kunit *test)
{
	const int *x = test->param_value;

	KUNIT_EXPECT_EQ(test, kw_double(*x), *x * 2);
}

static struct kunit_case kw_cases[] = {
	KUNIT_CASE(kw_pass),
	KUNIT_CASE(kw_double_two),
	KUNIT_CASE(kw_skip),
	KUNIT_CASE_PARAM(kw_double_each, kw_inputs_gen_params),
	{}
};

static struct kunit_suite kw_suite = { .name = "kwkunit", .test_cases = kw_cases };
kunit_test_suite(kw_suite);

static int __init kw_init(void) { pr_info("kwkunit: broken %d loaded\n", KW_BROKEN); return 0; }
static void __exit kw_exit(void) { }
module_init(kw_init);
module_exit(kw_exit);
MODULE_LICENSE("GPL");

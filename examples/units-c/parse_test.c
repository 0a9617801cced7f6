// SPDX-License-Identifier: GPL-2.0
/* KUnit tests for units_parse(): they run when the module is loaded. */

#include <kunit/test.h>

#include "units.h"

static void units_plain(struct kunit *test)
{
	u64 bytes;

	KUNIT_ASSERT_EQ(test, units_parse("4096", &bytes), 0);
	KUNIT_EXPECT_EQ(test, bytes, 4096ULL);
}

struct units_case {
	const char *in;
	u64 want;
};

static const struct units_case units_suffixed[] = {
	{ "1K", 1ULL << 10 },
	{ "2M", 2ULL << 20 },
	{ "3G", 3ULL << 30 },
};

static void units_desc(const struct units_case *c, char *desc)
{
	snprintf(desc, KUNIT_PARAM_DESC_SIZE, "%s", c->in);
}

KUNIT_ARRAY_PARAM(units_suffixed, units_suffixed, units_desc);

/* One case, run once per entry of units_suffixed. */
static void units_suffixes(struct kunit *test)
{
	const struct units_case *c = test->param_value;
	u64 bytes;

	KUNIT_ASSERT_EQ(test, units_parse(c->in, &bytes), 0);
	KUNIT_EXPECT_EQ(test, bytes, c->want);
}

static void units_rejects(struct kunit *test)
{
	u64 bytes;

	KUNIT_EXPECT_EQ(test, units_parse("", &bytes), -EINVAL);
	KUNIT_EXPECT_EQ(test, units_parse("K", &bytes), -EINVAL);
	KUNIT_EXPECT_EQ(test, units_parse("12Q", &bytes), -EINVAL);
}

static void units_overflow(struct kunit *test)
{
	u64 bytes;

	KUNIT_EXPECT_EQ(test, units_parse("17179869184G", &bytes), -ERANGE);
	KUNIT_EXPECT_EQ(test, units_parse("99999999999999999999", &bytes), -ERANGE);
}

static struct kunit_case units_cases[] = {
	KUNIT_CASE(units_plain),
	KUNIT_CASE_PARAM(units_suffixes, units_suffixed_gen_params),
	KUNIT_CASE(units_rejects),
	KUNIT_CASE(units_overflow),
	{}
};

static struct kunit_suite units_suite = {
	.name = "units",
	.test_cases = units_cases,
};

kunit_test_suite(units_suite);

// kwatch's gdb test module: writing its parameter calls kwgdb_poke.
#include <linux/module.h>
#include <linux/moduleparam.h>

static int kwgdb_value;

static noinline int kwgdb_poke(int v)
{
	kwgdb_value = v * 2;
	pr_info("kwgdb: poked %d\n", v);
	return 0;
}

static int kwgdb_set(const char *val, const struct kernel_param *kp)
{
	int v, err = kstrtoint(val, 10, &v);

	if (err)
		return err;
	return kwgdb_poke(v);
}

static const struct kernel_param_ops kwgdb_ops = { .set = kwgdb_set, .get = param_get_int };
module_param_cb(poke, &kwgdb_ops, &kwgdb_value, 0644);
MODULE_LICENSE("GPL");

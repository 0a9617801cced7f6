/* struct module of Linux 6.4 on, cut to what kwatch reads: the list and
 * name, then mem[] after init, cacheline aligned (CONFIG_MODULES_TREE_LOOKUP). */
#ifdef NO_MOD_MEM_TYPE /* debug info that lacks the enum */
#define MOD_MEM_NUM_TYPES 7
#else
enum mod_mem_type { MOD_TEXT = 0, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT,
	MOD_INIT_TEXT, MOD_INIT_DATA, MOD_INIT_RODATA, MOD_MEM_NUM_TYPES, MOD_INVALID = -1 };
#endif
struct module;
struct mod_tree_node { struct module *mod; void *node[6]; };
struct module_memory { void *base; unsigned int size; struct mod_tree_node mtn; };
struct module { int state; struct { void *next, *prev; } list; char name[56];
	int (*init)(void); struct module_memory mem[MOD_MEM_NUM_TYPES] __attribute__((aligned(64))); };

/* struct module of Linux 6.1, cut to what kwatch reads: one core_layout. */
struct module_layout { void *base; unsigned int size, text_size, ro_size, ro_after_init_size; };
struct module { int state; struct { void *next, *prev; } list; char name[56];
	int (*init)(void); struct module_layout core_layout, init_layout; };

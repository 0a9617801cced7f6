/* SPDX-License-Identifier: GPL-2.0 */
#ifndef UNITS_H
#define UNITS_H

#include <linux/types.h>

int units_parse(const char *s, u64 *bytes);

#endif

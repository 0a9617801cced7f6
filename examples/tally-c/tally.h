/* SPDX-License-Identifier: GPL-2.0 */
/* What main.c and count.c share: the counter's API and its step. */
#ifndef TALLY_H
#define TALLY_H

#define TALLY_VERSION 1
#define TALLY_STEP 1

unsigned long tally_add(unsigned long n);

#endif

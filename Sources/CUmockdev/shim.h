#ifndef PASSTHROUGH_CUMOCKDEV_SHIM_H
#define PASSTHROUGH_CUMOCKDEV_SHIM_H
/* Tests only: an in-process umockdev testbed that owns the fake /sys and sends uevents. */
#include <umockdev.h>

static inline void CUmockdev_unref(void *object) { g_object_unref(object); }
#endif

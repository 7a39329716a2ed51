#ifndef PASSTHROUGH_CUDEV_SHIM_H
#define PASSTHROUGH_CUDEV_SHIM_H
#ifdef __linux__
#include <libudev.h>
#include <sys/eventfd.h>
#include <poll.h>

/* eventfd flags are macros over enum values; hand them to Swift as plain constants. */
static inline int CUdev_eventfd_cloexec_nonblock(void) { return EFD_CLOEXEC | EFD_NONBLOCK; }
#endif
#endif

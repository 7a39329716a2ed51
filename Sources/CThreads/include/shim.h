#ifndef C_THREADS_SHIM_H
#define C_THREADS_SHIM_H

#include <sys/eventfd.h>

static inline int CThreads_eventfd_cloexec_nonblock(void) { return EFD_CLOEXEC | EFD_NONBLOCK; }

#endif

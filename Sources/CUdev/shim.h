#ifndef PASSTHROUGH_CUDEV_SHIM_H
#define PASSTHROUGH_CUDEV_SHIM_H
#ifdef __linux__
#include <libudev.h>
#include <poll.h>
#endif
#endif

#ifndef PASSTHROUGH_CSYSTEMD_SHIM_H
#define PASSTHROUGH_CSYSTEMD_SHIM_H
#ifdef __linux__
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>
#endif
#endif

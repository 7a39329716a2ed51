// Everything is in include/shim.h.
#include "shim.h"

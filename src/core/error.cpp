// xfer::Error is header-only; this file keeps the header/source mirror and
// checks the header compiles on its own.
#include "xfer/core/error.h"

/* The memdl version, printed by `memdl --version` and written into every
 * run's metrics start record. */
#ifndef MDL_COMMON_VERSION_H
#define MDL_COMMON_VERSION_H

#ifndef MDL_VERSION
#define MDL_VERSION "0.1.0"
#endif

#endif

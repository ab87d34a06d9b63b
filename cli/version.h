/* memdl's version: printed by `memdl --version` and part of every run's
 * fingerprint (a new memdl may compute different bits). */
#ifndef MDL_CLI_VERSION_H
#define MDL_CLI_VERSION_H

#ifndef MDL_VERSION
#define MDL_VERSION "0.1.0"
#endif

#endif

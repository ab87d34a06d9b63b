/* Small protobuf-c helpers every module wants: deep copy and free. */
#ifndef MDL_COMMON_PB_H
#define MDL_COMMON_PB_H

#include <protobuf-c/protobuf-c.h>

/* A deep copy of m (via the wire format), owned by the caller and freed
 * with mdl_pb_free. NULL in, NULL out. Aborts only on memory exhaustion. */
void *mdl_pb_dup(const void *m);

/* protobuf_c_message_free_unpacked, NULL-safe. */
void mdl_pb_free(void *m);

#endif

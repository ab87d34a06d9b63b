/* The process-wide HDF5 lock (see h5lock.h). */
#include "common/h5lock.h"

#include <pthread.h>

static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

void mdl_h5_lock(void) {
  pthread_mutex_lock(&h5_lock);
}

void mdl_h5_unlock(void) {
  pthread_mutex_unlock(&h5_lock);
}

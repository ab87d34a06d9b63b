/* One process-wide lock for HDF5 calls: Debian's serial libhdf5 is built
 * without thread safety, and both the data sources (runtime/data) and the
 * HDF5Output layer (runtime/cpu) call it. Owns only the lock; neither
 * includes the other. */
#ifndef MDL_COMMON_H5LOCK_H
#define MDL_COMMON_H5LOCK_H

void mdl_h5_lock(void);
void mdl_h5_unlock(void);

#endif

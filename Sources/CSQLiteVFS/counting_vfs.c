// A pass-through SQLite VFS that counts written bytes (see counting_vfs.h). Every method forwards
// to the default VFS; only xOpen (to wrap the file) and xWrite (to count) do anything else.
#include "counting_vfs.h"
#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>

static _Atomic long long bytes_written = 0;
static sqlite3_vfs *base_vfs = 0;
static sqlite3_vfs counting_vfs;

typedef struct {
    sqlite3_file base;   // pMethods: ours
    sqlite3_file *real;  // the default VFS's file, allocated right after this struct
} CountingFile;

#define REAL(f) (((CountingFile *)(f))->real)

static int c_close(sqlite3_file *f) { int rc = REAL(f)->pMethods->xClose(REAL(f)); f->pMethods = 0; return rc; }
static int c_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xRead(REAL(f), b, n, o); }
static int c_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
    int rc = REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
    if (rc == SQLITE_OK) atomic_fetch_add(&bytes_written, (long long)n);
    return rc;
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int c_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int c_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int c_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int c_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int c_reserved(sqlite3_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int c_control(sqlite3_file *f, int op, void *a) { return REAL(f)->pMethods->xFileControl(REAL(f), op, a); }
static int c_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int c_characteristics(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int c_shm_map(sqlite3_file *f, int i, int s, int e, void volatile **p) { return REAL(f)->pMethods->xShmMap(REAL(f), i, s, e, p); }
static int c_shm_lock(sqlite3_file *f, int o, int n, int fl) { return REAL(f)->pMethods->xShmLock(REAL(f), o, n, fl); }
static void c_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int c_shm_unmap(sqlite3_file *f, int d) { return REAL(f)->pMethods->xShmUnmap(REAL(f), d); }
static int c_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) { return REAL(f)->pMethods->xFetch(REAL(f), o, n, p); }
static int c_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { return REAL(f)->pMethods->xUnfetch(REAL(f), o, p); }

static sqlite3_io_methods methods_v1, methods_v2, methods_v3;

static void init_methods(void) {
    sqlite3_io_methods m = {0};
    m.xClose = c_close; m.xRead = c_read; m.xWrite = c_write; m.xTruncate = c_truncate; m.xSync = c_sync;
    m.xFileSize = c_size; m.xLock = c_lock; m.xUnlock = c_unlock; m.xCheckReservedLock = c_reserved;
    m.xFileControl = c_control; m.xSectorSize = c_sector; m.xDeviceCharacteristics = c_characteristics;
    m.iVersion = 1; methods_v1 = m;
    m.xShmMap = c_shm_map; m.xShmLock = c_shm_lock; m.xShmBarrier = c_shm_barrier; m.xShmUnmap = c_shm_unmap;
    m.iVersion = 2; methods_v2 = m;
    m.xFetch = c_fetch; m.xUnfetch = c_unfetch;
    m.iVersion = 3; methods_v3 = m;
}

static int c_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
    (void)vfs;
    CountingFile *counting = (CountingFile *)file;
    counting->real = (sqlite3_file *)&counting[1];
    file->pMethods = 0;
    int rc = base_vfs->xOpen(base_vfs, name, counting->real, flags, out_flags);
    if (counting->real->pMethods) {
        int version = counting->real->pMethods->iVersion;
        file->pMethods = version >= 3 ? &methods_v3 : version == 2 ? &methods_v2 : &methods_v1;
    }
    return rc;
}

int bw_counting_vfs_register(void) {
    if (base_vfs) return SQLITE_OK;
    sqlite3_vfs *found = sqlite3_vfs_find(0);
    if (!found) return SQLITE_ERROR;
    init_methods();
    counting_vfs = *found;
    counting_vfs.zName = "blockwise-counting";
    counting_vfs.szOsFile = (int)sizeof(CountingFile) + found->szOsFile;
    counting_vfs.xOpen = c_open;
    counting_vfs.pNext = 0;
    base_vfs = found;
    int rc = sqlite3_vfs_register(&counting_vfs, 0);
    if (rc != SQLITE_OK) base_vfs = 0;
    return rc;
}

long long bw_counting_vfs_bytes_written(void) { return atomic_load(&bytes_written); }

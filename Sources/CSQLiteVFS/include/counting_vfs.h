#ifndef BW_COUNTING_VFS_H
#define BW_COUNTING_VFS_H

/// A SQLite VFS named "blockwise-counting" that wraps the default VFS and counts the bytes
/// SQLite passes to xWrite (database file, WAL, rollback journal): what it writes to the file
/// system. Registered once, not as the default; connections opened with it are counted.
/// Returns SQLITE_OK (0) or SQLite's error code.
int bw_counting_vfs_register(void);

/// The bytes written through the VFS by this process so far (all its connections).
long long bw_counting_vfs_bytes_written(void);

#endif

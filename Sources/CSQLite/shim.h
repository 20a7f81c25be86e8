#include <sqlite3.h>

/// sqlite3_db_config is variadic, which Swift cannot call: this wrapper turns off the
/// connection's lookaside allocator (SQLITE_DBCONFIG_LOOKASIDE with a 0-slot buffer).
static inline int blockwise_disable_lookaside(sqlite3 *db) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_LOOKASIDE, (void *)0, 0, 0);
}

/// Process-wide set-up, before the first connection: no initial bulk page-cache allocation
/// (SQLite otherwise pre-allocates 20 pages per connection), so the engine's memory is the
/// bounded page cache plus schema and statements. Returns SQLITE_MISUSE if SQLite already started.
static inline int blockwise_configure_sqlite(void) {
    return sqlite3_config(SQLITE_CONFIG_PAGECACHE, (void *)0, 0, 0);
}

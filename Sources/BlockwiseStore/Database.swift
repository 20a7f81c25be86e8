import CSQLite
import CSQLiteVFS
import Foundation

/// Errors from SQLite and from the store's own checks; each says what to do next.
public enum StoreError: Error, CustomStringConvertible {
    /// A SQLite call failed: its result code, SQLite's message and the SQL.
    case sqlite(code: Int32, message: String, sql: String)
    case missingFile(path: String)
    case notAStore(path: String, reason: String)
    case newerFormat(path: String, found: Int32, supported: Int32)
    case fingerprintMismatch(path: String, differences: [String])
    case corruptRow(path: String, level: Int, split: String, row: Int)
    case missingLevel(path: String, level: Int, split: String)
    case invalidArgument(String)
    /// The file is a blockwise store, but part of it is missing or fails its checks.
    case damaged(path: String, what: String)
    /// The file is not a SQLite database at all.
    case notADatabase(path: String, reason: String)
    /// Another process holds the store's writer lock.
    case locked(path: String, holder: String)
    /// The store holds no finished run (no report yet).
    case unfinished(path: String)
    /// The file system refused: the disk is full, the directory is missing or read-only...
    case fileSystem(path: String, problem: String)

    public var description: String {
        switch self {
        case .sqlite(let code, let message, let sql):
            return "SQLite error \(code) (\(message)) in: \(sql)"
        case .damaged(let path, let what):
            return "the store '\(path)' is damaged (\(what)). Run 'blockwise cache verify --store \(path)' for the full list; "
                + "'blockwise train --fresh --store \(path)' replaces it and starts over."
        case .notADatabase(let path, let reason):
            return "'\(path)' is not a blockwise store: \(reason). Pass the file written by blockwise train --store, "
                + "or --fresh to replace it with a new store."
        case .locked(let path, let holder):
            return "the store '\(path)' is being written by another process (\(holder)). Wait for it to finish, "
                + "or pass --store with another file; reading it (blockwise cache ls/stats/show/export) works meanwhile."
        case .unfinished(let path):
            return "'\(path)' holds no finished run yet (its report is written when training ends). "
                + "Finish it with blockwise train --resume --store \(path) (and the run's options)."
        case .fileSystem(let path, let problem):
            return "cannot write the store '\(path)': \(problem)"
        case .missingFile(let path):
            return "no store at '\(path)'. Train first (blockwise train --store \(path)) or pass --store PATH."
        case .notAStore(let path, let reason):
            return "'\(path)' is not a blockwise store (\(reason)). Pass the file written by blockwise train --store."
        case .newerFormat(let path, let found, let supported):
            return "'\(path)' has store format version \(found); this blockwise reads versions up to \(supported). Update blockwise."
        case .fingerprintMismatch(let path, let differences):
            return "the store '\(path)' was made by a different configuration (\(differences.joined(separator: "; "))). "
                + "Use --fresh to start over in it, or --store with another file."
        case .corruptRow(let path, let level, let split, let row):
            return "the store '\(path)' is damaged (level \(level) \(split) sample \(row) is missing or fails its checksum). "
                + "Run 'blockwise cache verify --store \(path)', then retrain with --fresh."
        case .missingLevel(let path, let level, let split):
            return "'\(path)' has no complete level \(level) for the \(split) split."
        case .invalidArgument(let message):
            return message
        }
    }
}

/// A SQLite connection (C API). Not thread-safe: one per thread.
public final class Database {
    public let path: String
    let handle: OpaquePointer

    /// Opens (or, unless `readOnly`, creates) the database file.
    public init(path: String, readOnly: Bool = false, create: Bool = true) throws {
        self.path = path
        if readOnly || !create {
            guard FileManager.default.fileExists(atPath: path) else { throw StoreError.missingFile(path: path) }
        }
        _ = Database.configured
        var db: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0))
        // Writable connections go through the counting VFS (everything forwarded to the default).
        let code = sqlite3_open_v2(path, &db, flags, readOnly ? nil : "blockwise-counting")
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            if code & 0xFF == SQLITE_CANTOPEN, let reason = Database.whyCannotOpen(path, readOnly: readOnly) {
                throw StoreError.fileSystem(path: path, problem: reason)
            }
            throw StoreError.sqlite(code: code, message: message, sql: "open \(path)")
        }
        handle = db
        // No lookaside allocator: by default SQLite reserves 100 x 1200 bytes per connection
        // for small allocations, which alone would exceed a microcontroller's budget.
        configureLookaside(db)
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 5000)
    }

    deinit { sqlite3_close_v2(handle) }

    /// Why `path` cannot be opened, in words (SQLite says only "unable to open database file").
    static func whyCannotOpen(_ path: String, readOnly: Bool) -> String? {
        let manager = FileManager.default
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return "it is a directory; pass a file name, e.g. --store \(path)/blockwise.sqlite"
        }
        guard manager.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            return "the directory '\(directory)' does not exist; create it (mkdir -p \(directory)) or pass another --store"
        }
        guard isDirectory.boolValue else { return "'\(directory)' is not a directory" }
        if readOnly { return manager.isReadableFile(atPath: path) ? nil : "the file is not readable (permission denied)" }
        if manager.fileExists(atPath: path), !manager.isWritableFile(atPath: path) {
            return "the file is read-only (permission denied); make it writable or pass another --store"
        }
        if !manager.isWritableFile(atPath: directory) {
            return "the directory '\(directory)' is not writable (the store and its -wal and -shm files live there); pass another --store"
        }
        return nil
    }

    /// Turns SQLite's I/O failures into errors that name the store and say what to do.
    func translate(_ code: Int32, message: String, sql: String) -> StoreError {
        switch code & 0xFF {
        case SQLITE_FULL:
            return .fileSystem(path: path, problem: "the disk is full (SQLite: \(message)). Free space or pass --store on another disk; "
                + "what the store held before stays intact, and the run resumes from its last checkpoint")
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return .damaged(path: path, what: "SQLite: \(message)")
        case SQLITE_READONLY:
            return .fileSystem(path: path, problem: "the file or its directory is read-only (SQLite: \(message))")
        case SQLITE_IOERR:
            return .fileSystem(path: path, problem: "an I/O error (SQLite \(code): \(message)); check the disk")
        default:
            return .sqlite(code: code, message: message, sql: sql)
        }
    }

    /// One-time process set-up (see blockwise_configure_sqlite in the CSQLite shim).
    static let configured: Bool = {
        blockwise_configure_sqlite() == SQLITE_OK && bw_counting_vfs_register() == SQLITE_OK
    }()

    /// Bytes SQLite has written to the file system through writable connections of this process
    /// (the counting VFS: database file, WAL and journal writes; the WAL index is shared memory).
    public static var bytesWrittenToFiles: Int {
        _ = configured
        return Int(bw_counting_vfs_bytes_written())
    }

    var errorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    /// Reads or writes `count` bytes of the blob in `table.column` of row `rowid` in place, by
    /// SQLite's incremental blob I/O: through the page cache chunk by chunk, so SQLite never holds
    /// the whole blob in memory (a `SELECT` of it would). The blob must already have `count` bytes
    /// (written as `zeroblob(count)`, which SQLite does not materialise either).
    public func blobIO(table: String, column: String, rowid: Int64, write: Bool, _ pointer: UnsafeMutableRawPointer, count: Int) throws {
        var blob: OpaquePointer?
        var code = sqlite3_blob_open(handle, "main", table, column, rowid, write ? 1 : 0, &blob)
        guard code == SQLITE_OK, let blob else {
            throw StoreError.sqlite(code: code, message: errorMessage, sql: "blob \(table).\(column) row \(rowid)")
        }
        defer { sqlite3_blob_close(blob) }
        guard Int(sqlite3_blob_bytes(blob)) == count else {
            throw StoreError.sqlite(code: SQLITE_MISMATCH, message: "the blob has \(sqlite3_blob_bytes(blob)) bytes, \(count) expected", sql: "blob \(table).\(column) row \(rowid)")
        }
        code = write ? sqlite3_blob_write(blob, pointer, Int32(count), 0) : sqlite3_blob_read(blob, pointer, Int32(count), 0)
        guard code == SQLITE_OK else { throw StoreError.sqlite(code: code, message: errorMessage, sql: "blob \(table).\(column) row \(rowid)") }
    }

    /// Runs one or more statements without results.
    public func execute(_ sql: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &error)
        if code != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? errorMessage
            sqlite3_free(error)
            throw translate(code, message: message, sql: sql)
        }
    }

    public func prepare(_ sql: String) throws -> Statement { try Statement(database: self, sql: sql) }

    /// Runs `body` in a transaction: committed if it returns, rolled back if it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    public var userVersion: Int32 {
        get throws {
            let statement = try prepare("PRAGMA user_version")
            guard try statement.step() else { return 0 }
            return Int32(statement.int(0))
        }
    }

    public func setUserVersion(_ version: Int32) throws { try execute("PRAGMA user_version = \(version)") }

    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// One scalar integer query.
    public func integer(_ sql: String, _ bindings: [Any?] = []) throws -> Int? {
        let statement = try prepare(sql)
        try statement.bind(bindings)
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.int(0)
    }

    /// Bytes SQLite's allocator holds now and its high-water mark (whole process: SQLite
    /// counts its memory globally).
    public static func memoryUsed() -> (current: Int, highwater: Int) {
        var current: Int64 = 0, highwater: Int64 = 0
        sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &current, &highwater, 0)
        return (Int(current), Int(highwater))
    }

    public static func resetMemoryHighwater() {
        var current: Int64 = 0, highwater: Int64 = 0
        sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &current, &highwater, 1)
    }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// A prepared statement; finalized when it is released.
public final class Statement {
    let database: Database
    let handle: OpaquePointer
    public let sql: String

    init(database: Database, sql: String) throws {
        self.database = database
        self.sql = sql
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v2(database.handle, sql, -1, &statement, nil)
        guard code == SQLITE_OK, let statement else {
            throw database.translate(code, message: database.errorMessage, sql: sql)
        }
        handle = statement
    }

    deinit { sqlite3_finalize(handle) }

    /// Steps once: true when a row is available, false when done; throws on anything else.
    @discardableResult
    public func step() throws -> Bool {
        let code = sqlite3_step(handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw database.translate(code, message: database.errorMessage, sql: sql)
        }
    }

    public func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// Binds values by position (1-based in SQL, 0-based here): Int, Int64, Double, String,
    /// Data, [UInt8], nil.
    public func bind(_ values: [Any?]) throws {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value {
            case nil: code = sqlite3_bind_null(handle, index)
            case let v as Int: code = sqlite3_bind_int64(handle, index, Int64(v))
            case let v as Int64: code = sqlite3_bind_int64(handle, index, v)
            case let v as Int32: code = sqlite3_bind_int64(handle, index, Int64(v))
            case let v as UInt32: code = sqlite3_bind_int64(handle, index, Int64(v))
            case let v as Double: code = sqlite3_bind_double(handle, index, v)
            case let v as String: code = sqlite3_bind_text(handle, index, v, -1, transient)
            case let v as Data: code = v.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), transient) }
            case let v as [UInt8]: code = v.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), transient) }
            default: preconditionFailure("cannot bind \(String(describing: value))")
            }
            if code != SQLITE_OK { throw StoreError.sqlite(code: code, message: database.errorMessage, sql: sql) }
        }
    }

    /// Binds a blob from raw memory (copied by SQLite).
    public func bindBlob(_ index: Int, _ pointer: UnsafeRawPointer, count: Int) throws {
        let code = sqlite3_bind_blob(handle, Int32(index + 1), pointer, Int32(count), transient)
        if code != SQLITE_OK { throw StoreError.sqlite(code: code, message: database.errorMessage, sql: sql) }
    }

    /// Runs a statement that returns no rows.
    public func run(_ values: [Any?] = []) throws {
        reset()
        try bind(values)
        try step()
    }

    /// The first column of the first row as text, nil when there is no row.
    public func firstString() throws -> String? {
        reset()
        return try step() ? string(0) : nil
    }

    public func isNull(_ column: Int) -> Bool { sqlite3_column_type(handle, Int32(column)) == SQLITE_NULL }
    public func int(_ column: Int) -> Int { Int(sqlite3_column_int64(handle, Int32(column))) }
    public func string(_ column: Int) -> String {
        guard let text = sqlite3_column_text(handle, Int32(column)) else { return "" }
        return String(cString: text)
    }
    /// The blob's bytes, valid until the next step/reset.
    public func blob(_ column: Int) -> UnsafeRawBufferPointer {
        let pointer = sqlite3_column_blob(handle, Int32(column))
        let count = Int(sqlite3_column_bytes(handle, Int32(column)))
        return UnsafeRawBufferPointer(start: pointer, count: count)
    }
    public func data(_ column: Int) -> Data { Data(blob(column)) }
}

/// Turns off the connection's lookaside memory (variadic sqlite3_db_config, via its C shim).
func configureLookaside(_ db: OpaquePointer) {
    blockwise_disable_lookaside(db)
}

import Foundation

/// What a file at a store path is, found without writing to it: the decision behind opening,
/// refusing, and what `--fresh` may replace (a damaged blockwise store or a file that is no
/// database, never another application's database).
public enum StoreFile: Equatable, Sendable {
    /// No file, or an empty one (SQLite makes a new database of it).
    case absent
    /// A SQLite database with no tables yet.
    case emptyDatabase
    /// A SQLite database whose schema is blockwise's (its contents may still be damaged:
    /// `cache verify` checks them).
    case blockwise
    /// Recognisably a blockwise store (SQLite's header and blockwise's schema text), but SQLite
    /// cannot read it.
    case damagedBlockwise(what: String)
    /// Not a SQLite database at all.
    case notADatabase(reason: String)
    /// Another application's SQLite database (or one SQLite cannot read and that does not look
    /// like blockwise's): never modified or replaced.
    case foreign(reason: String)

    /// The tables and columns every format version of blockwise's schema has (version 2 adds `checkpoints.lap`).
    public static let schema: [String: Set<String>] = [
        "run": ["id", "configuration", "data", "fingerprint", "feature_encoding", "created"],
        "levels": ["level", "split", "channels", "height", "width", "encoding", "row_count", "complete"],
        "features": ["id", "level", "split", "row", "label", "checksum", "data"],
        "modules": ["module", "lap", "status", "epochs_done", "state", "evaluation"],
        "checkpoints": ["module", "name", "kind", "shape", "checksum", "data"],
        "report": ["id", "json"],
        "metrics": ["module", "lap", "epoch", "task_loss", "kinetic_energy", "train_accuracy", "learning_rate", "transport_weight", "log"],
    ]

    static let sqliteHeader = Array("SQLite format 3\u{0}".utf8)

    /// The file a store path names: symbolic links resolved (the lock, `--fresh` and SQLite all
    /// act on the real file, however the user spells or links it); for a file that does not
    /// exist yet, its directory resolved.
    public static func resolve(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        if FileManager.default.fileExists(atPath: path) { return url.resolvingSymlinksInPath().path }
        let directory = url.deletingLastPathComponent().resolvingSymlinksInPath()
        return directory.appendingPathComponent(url.lastPathComponent).path
    }

    /// Why `path` cannot hold a store at all, whatever it holds (a directory, a FIFO, a device);
    /// nil for a regular file or no file. Never replaced, not even by `--fresh`.
    public static func notAFile(_ path: String) -> String? {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            // A dangling symbolic link: the name exists, its target does not.
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil {
                return "it is a symbolic link to a file that does not exist"
            }
            return nil
        }
        if isDirectory.boolValue { return "it is a directory; pass a file name, e.g. --store \(path)/blockwise.sqlite" }
        guard let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType else { return nil }
        switch type {
        case .typeRegular, .typeSymbolicLink: return nil
        case .typeCharacterSpecial, .typeBlockSpecial: return "it is a device, not a regular file"
        case .typeSocket: return "it is a socket, not a regular file"
        default: return "it is not a regular file (a FIFO or another special file)"
        }
    }

    /// Looks at `path` (read-only).
    public static func identify(_ path: String) -> StoreFile {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            return FileManager.default.fileExists(atPath: path) ? .notADatabase(reason: "it cannot be read") : .absent
        }
        // The schema's text lives on the first pages: 1 MiB is plenty to recognise it.
        let head = [UInt8]((try? handle.read(upToCount: 1 << 20)) ?? Data())
        try? handle.close()
        if head.isEmpty { return .absent }
        guard head.starts(with: sqliteHeader) else {
            // A writer killed while it created the file (its first transaction, the switch to
            // WAL) left a hot journal of a database that had no pages: rolling it back, as the next
            // writer does, gives an empty database (its first page may not be written yet).
            if rolledBackIsEmpty(path) { return .emptyDatabase }
            return .notADatabase(reason: "it does not start with SQLite's header (\(fileSize(path)) bytes)")
        }
        let looksLikeBlockwise = contains(head, "feature_encoding") && contains(head, "CREATE TABLE features")
        do {
            let database = try Database(path: path, readOnly: true)
            let tables = try database.tableColumns()
            if tables.isEmpty { return .emptyDatabase }
            let missing = schema.filter { table, columns in !(tables[table].map { columns.isSubset(of: $0) } ?? false) }.keys.sorted()
            if missing.isEmpty { return .blockwise }
            if looksLikeBlockwise && missing.count < schema.count {
                return .damagedBlockwise(what: "tables missing or changed: \(missing.joined(separator: ", "))")
            }
            return .foreign(reason: "it is another application's SQLite database (tables \(tables.keys.sorted().prefix(8).joined(separator: ", ")))")
        } catch {
            // A writer killed mid-transaction (train, or cache vacuum) left a journal or WAL that only
            // a writer can recover: a read-only open fails (SQLITE_READONLY). The file is blockwise's
            // by its text; the writer that opens it next recovers it, then checks its schema and run.
            if looksLikeBlockwise, ["-journal", "-wal"].contains(where: { FileManager.default.fileExists(atPath: path + $0) }) {
                return .blockwise
            }
            // The same with the first page written: a read-only open cannot roll the journal back.
            if rolledBackIsEmpty(path) { return .emptyDatabase }
            let reason: String
            switch error as? StoreError {
            case .damaged(_, let what)?: reason = what
            case .sqlite(_, let message, _)?: reason = "SQLite: \(message)"
            default: reason = "\(error)"
            }
            if looksLikeBlockwise { return .damagedBlockwise(what: "SQLite cannot read it (\(reason))") }
            return .foreign(reason: "SQLite cannot read it (\(reason)) and it does not look like a blockwise store")
        }
    }

    /// Whether `path-journal` is a hot rollback journal of a transaction that began on an empty
    /// database: its header (SQLite's file format, "the rollback journal") starts with the
    /// journal magic and gives 0 as the database's size in pages when the transaction began.
    static func rolledBackIsEmpty(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path + "-journal") else { return false }
        defer { try? handle.close() }
        let header = [UInt8]((try? handle.read(upToCount: 28)) ?? Data())
        let magic: [UInt8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]
        guard header.count == 28, Array(header[0..<8]) == magic else { return false }
        let initialPages = header[16..<20].reduce(0) { $0 << 8 | Int($1) }
        return initialPages == 0
    }

    /// Why an output file at `path` would overwrite a database (nil: it would not): the path is
    /// an SQLite database (a store, say), or the lock, journal or WAL file beside one. For the
    /// commands with no `--store` to compare their outputs with (`plan`).
    public static func overwritesDatabase(_ path: String) -> String? {
        func isDatabase(_ file: String) -> Bool {
            guard let handle = FileHandle(forReadingAtPath: resolve(file)) else { return false }
            defer { try? handle.close() }
            return [UInt8]((try? handle.read(upToCount: sqliteHeader.count)) ?? Data()).starts(with: sqliteHeader)
        }
        if isDatabase(path) { return "is an SQLite database (a blockwise store?)" }
        for suffix in ["-lock", "-journal", "-wal", "-shm"] where path.hasSuffix(suffix) {
            let base = String(path.dropLast(suffix.count))
            if isDatabase(base) { return "is the \(suffix.dropFirst()) file of the database '\(base)'" }
        }
        return nil
    }

    /// Whether two paths name one file (the same inode, or the same path once links are resolved).
    public static func isSameFile(_ a: String, _ b: String) -> Bool {
        if resolve(a) == resolve(b) { return true }
        let manager = FileManager.default
        guard let x = try? manager.attributesOfItem(atPath: a), let y = try? manager.attributesOfItem(atPath: b),
              let inodeX = (x[.systemFileNumber] as? NSNumber)?.uint64Value, let inodeY = (y[.systemFileNumber] as? NSNumber)?.uint64Value,
              let deviceX = (x[.systemNumber] as? NSNumber)?.uint64Value, let deviceY = (y[.systemNumber] as? NSNumber)?.uint64Value else {
            return false
        }
        return inodeX == inodeY && deviceX == deviceY
    }

    /// Removes the store file and SQLite's -wal and -shm files beside it (not the lock file,
    /// which the caller holds).
    public static func remove(_ path: String) throws {
        for file in [path, path + "-wal", path + "-shm", path + "-journal"] where FileManager.default.fileExists(atPath: file) {
            do { try FileManager.default.removeItem(atPath: file) } catch {
                throw StoreError.fileSystem(path: path, problem: "cannot remove '\(file)' to replace it: \(error.localizedDescription)")
            }
        }
    }

    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    static func contains(_ bytes: [UInt8], _ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard bytes.count >= needle.count, let first = needle.first else { return false }
        var index = 0
        while index <= bytes.count - needle.count {
            if bytes[index] == first && bytes[index..<(index + needle.count)].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}

extension Database {
    /// Every table's column names (from sqlite_master and `PRAGMA table_info`).
    func tableColumns() throws -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        let tables = try prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        var names: [String] = []
        while try tables.step() { names.append(tables.string(0)) }
        for name in names {
            let info = try prepare("SELECT name FROM pragma_table_info(?)")
            try info.bind([name])
            var columns = Set<String>()
            while try info.step() { columns.insert(info.string(0)) }
            result[name] = columns
        }
        return result
    }
}

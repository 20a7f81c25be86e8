import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// The SQLite file of one run: its configuration and fingerprint, the feature levels (level 0 =
/// the input images, level k = the outputs of module k, train and test), module checkpoints and
/// metrics. Readable with the stock `sqlite3` shell (see README, "The store").
///
/// Features are stored one row per sample (`features.id = level << 33 | split << 32 | row`), the
/// values encoded fp32, fp16 or bf16, each row with a CRC-32 of its bytes and label, checked on
/// every read. Writes go in one transaction per batch; the journal is WAL. SQLite's page cache
/// is bounded (`PRAGMA cache_size`) and its memory is counted in the ledger's store-engine
/// category after every batch of operations.
public final class FeatureStore: FeatureCache, TrainingJournal {
    /// The most values one stored sample may have (a level's C x H x W); more is damage.
    public static let maximumSampleValues = 1 << 24

    /// Whether a level's [C, H, W] from table levels can be a sample's shape (each size in
    /// 1...65536, at most ``maximumSampleValues`` values): anything else is damage.
    public static func isValidSampleShape(_ shape: [Int]) -> Bool {
        shape.allSatisfy { (1...65536).contains($0) } && shape.reduce(1, *) <= maximumSampleValues
    }

    /// How many feature rows a level holds and its lowest and highest row, by key (the rows a
    /// read looks up; no row data is read).
    func rowSpan(level: Int, split: Split) throws -> (count: Int, first: Int, last: Int) {
        let base = FeatureStore.rowID(level: level, split: split, row: 0)
        let rows = try database.prepare("SELECT count(*), min(id) - ?1, max(id) - ?1 FROM features WHERE id >= ?1 AND id < ?2")
        try rows.bind([base, base + (1 << 32)])
        _ = try rows.step()
        return (rows.int(0), rows.int(1), rows.int(2))
    }

    /// Version of the schema (PRAGMA user_version). 2: checkpoints are keyed by lap (a multilap
    /// run keeps each lap's parameters; version 1 kept one set per module, overwritten by every
    /// lap). A version-1 store is migrated when a writer opens it; readers read both.
    public static let formatVersion: Int32 = 2
    /// Version of the feature format (rows, encodings), part of a run's fingerprint: unchanged
    /// by the schema's version 2, so a migrated store still holds the same run.
    public static let featureFormatVersion: Int32 = 1
    /// The schema version of the open file (after migration, for a writer).
    public internal(set) var schemaVersion: Int32 = FeatureStore.formatVersion

    public let database: Database
    public let path: String
    public let encoding: FeatureEncoding
    let ledger: MemoryLedger?
    /// Encode/decode scratch for one sample (counted as I/O buffers).
    var scratch: Tensor?
    /// Bytes written to and read from feature rows (for the emulated device's storage time).
    public internal(set) var bytesWritten = 0
    /// Bytes SQLite wrote to the file system (every writable connection of the process, through the
    /// counting VFS) since this store was opened: the feature bytes plus WAL frame headers, page
    /// overhead, checkpoints into the database file, the journal and the run's metadata.
    public var fileBytesWritten: Int? { Database.bytesWrittenToFiles - fileBytesAtOpen }
    let fileBytesAtOpen = Database.bytesWrittenToFiles
    public internal(set) var bytesRead = 0
    public internal(set) var operations = 0

    /// The writer lock, held while this store is open for writing (nil when reading).
    let lock: StoreLock?
    /// What `replace` removed when the store was opened (nil: nothing).
    public private(set) var replacedFile: StoreFile?

    /// Opens or creates a store for writing, holding its writer lock (``StoreLock``) until the
    /// store is released.
    /// - cacheKiB: bound on SQLite's page cache.
    /// - replace: remove what is at `path` first (`--fresh`): a blockwise store, healthy or
    ///   damaged, or a file that is no database. Another application's database is refused.
    /// - purpose: recorded in the lock for a second writer's error message.
    public init(path: String, encoding: FeatureEncoding = .fp32, ledger: MemoryLedger? = nil, cacheKiB: Int = 2048,
                replace: Bool = false, purpose: String = "blockwise train") throws {
        self.path = path
        self.encoding = encoding
        self.ledger = ledger
        guard !path.isEmpty else { throw StoreError.invalidArgument("--store: the store needs a file name (got an empty path)") }
        if let reason = StoreFile.notAFile(path) { throw StoreError.fileSystem(path: path, problem: reason) }
        // The real file: a symbolic link is followed, so two spellings of one store share one lock.
        let real = StoreFile.resolve(path)
        lock = try StoreLock(storePath: real, purpose: purpose)
        // Decided before anything is written: a foreign database is refused untouched.
        let file = StoreFile.identify(real)
        switch file {
        case .foreign(let reason): throw StoreError.notAStore(path: path, reason: reason)
        case .absent, .emptyDatabase: break
        case .blockwise:
            if replace { try StoreFile.remove(real); replacedFile = file }
        case .damagedBlockwise(let what):
            guard replace else { throw StoreError.damaged(path: path, what: what) }
            try StoreFile.remove(real); replacedFile = file
        case .notADatabase(let reason):
            guard replace else { throw StoreError.notADatabase(path: path, reason: reason) }
            try StoreFile.remove(real); replacedFile = file
        }
        database = try Database(path: real)
        // WAL before the first write (the schema of a new file, a migration): a writer killed then
        // leaves a WAL, never a hot rollback journal that read-only openers cannot roll back.
        try database.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -\(cacheKiB);")
        try FeatureStore.migrate(database, path: path)
        schemaVersion = try database.userVersion
        try accountEngineMemory()
    }

    /// The writer leaves the file in rollback-journal mode: the WAL is checkpointed into the file
    /// and `-wal`/`-shm` are removed, so that the read-only commands afterwards (which cannot
    /// remove them) create none. A reader still open keeps the WAL (SQLITE_BUSY, ignored); the
    /// next writer sets WAL again. After a crash the file is still in WAL mode until a writer
    /// opens it.
    deinit {
        if lock != nil { try? database.execute("PRAGMA journal_mode = DELETE") }
    }

    /// Opens an existing store read-only (for `blockwise cache` and `report`); takes no lock.
    public init(readingAt path: String) throws {
        self.path = path
        self.ledger = nil
        lock = nil
        if let reason = StoreFile.notAFile(path) { throw StoreError.fileSystem(path: path, problem: reason) }
        guard FileManager.default.fileExists(atPath: path) else { throw StoreError.missingFile(path: path) }
        switch StoreFile.identify(path) {
        case .blockwise: break
        case .absent, .emptyDatabase: throw StoreError.notAStore(path: path, reason: "it is empty: it has no blockwise tables")
        case .damagedBlockwise(let what): throw StoreError.damaged(path: path, what: what)
        case .notADatabase(let reason): throw StoreError.notADatabase(path: path, reason: reason)
        case .foreign(let reason): throw StoreError.notAStore(path: path, reason: reason)
        }
        database = try Database(path: path, readOnly: true)
        let version = try database.userVersion
        if version > FeatureStore.formatVersion {
            throw StoreError.newerFormat(path: path, found: version, supported: FeatureStore.formatVersion)
        }
        schemaVersion = version
        encoding = try FeatureStore.readEncoding(database) ?? .fp32
        if let classes = (try? storedIdentity())??.configuration.model.classes { labelLimit = classes }
    }

    /// Labels a row may hold: the run's classes once the run is known (a label outside them
    /// would index past the classifier's outputs).
    var labelLimit = 65536

    static func readEncoding(_ database: Database) throws -> FeatureEncoding? {
        let statement = try database.prepare("SELECT feature_encoding FROM run WHERE id = 1")
        guard try statement.step() else { return nil }
        return FeatureEncoding(rawValue: statement.string(0))
    }

    /// Creates or upgrades the schema (`PRAGMA user_version` migrations).
    static func migrate(_ database: Database, path: String) throws {
        let version = try database.userVersion
        if version > formatVersion { throw StoreError.newerFormat(path: path, found: version, supported: formatVersion) }
        if version == 0 {
            let tables = try database.integer("SELECT count(*) FROM sqlite_master") ?? 0
            if tables > 0 {
                // Identified as blockwise's by its tables, yet its format version was reset: damage.
                throw StoreError.damaged(path: path, what: "its format version (PRAGMA user_version) is 0, blockwise's is \(formatVersion)")
            }
            try database.transaction {
                try database.execute("""
                CREATE TABLE run (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    configuration TEXT NOT NULL,      -- TrainingConfiguration as JSON
                    data TEXT NOT NULL,               -- data set, subsets, seed (JSON)
                    fingerprint TEXT NOT NULL,        -- hash of everything that determines the features
                    feature_encoding TEXT NOT NULL,   -- fp32 | fp16 | bf16
                    created TEXT NOT NULL
                );
                CREATE TABLE levels (
                    level INTEGER NOT NULL,           -- 0 = input images, k = outputs of module k
                    split TEXT NOT NULL,              -- train | test
                    channels INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
                    encoding TEXT NOT NULL,
                    row_count INTEGER NOT NULL,
                    complete INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (level, split)
                );
                CREATE TABLE features (
                    id INTEGER PRIMARY KEY,           -- level << 33 | (split = test) << 32 | row
                    level INTEGER NOT NULL, split TEXT NOT NULL, row INTEGER NOT NULL,
                    label INTEGER NOT NULL,
                    checksum INTEGER NOT NULL,        -- CRC-32 of data, then of the label (int32 LE)
                    data BLOB NOT NULL                -- channels*height*width values, little-endian
                );
                CREATE TABLE modules (
                    module INTEGER NOT NULL, lap INTEGER NOT NULL,
                    status TEXT NOT NULL,             -- training | complete
                    epochs_done INTEGER NOT NULL,
                    state TEXT,                       -- epoch checkpoint (training) or completed module (complete), JSON
                    evaluation TEXT,                  -- ModuleEvaluation JSON once complete
                    PRIMARY KEY (module, lap)
                );
                \(checkpointsTable("checkpoints"))
                CREATE TABLE report (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    json TEXT NOT NULL                -- the run's report (what report.json holds)
                );
                CREATE TABLE metrics (
                    module INTEGER NOT NULL, lap INTEGER NOT NULL, epoch INTEGER NOT NULL,
                    task_loss REAL, kinetic_energy REAL, train_accuracy REAL, learning_rate REAL, transport_weight REAL,
                    log TEXT NOT NULL,
                    PRIMARY KEY (module, lap, epoch)
                );
                """)
                try database.setUserVersion(formatVersion)
            }
            return
        }
        if version == 1 {
            // Version 1 kept one set of checkpoints per module, those of the module's latest lap in
            // `modules` (each save overwrote the last): they move to that lap, in one transaction.
            try database.transaction {
                try database.execute("""
                \(checkpointsTable("checkpoints_v2"))
                INSERT INTO checkpoints_v2 (module, lap, name, kind, shape, checksum, data)
                    SELECT module, \(version1CheckpointLap), name, kind, shape, checksum, data FROM checkpoints;
                DROP TABLE checkpoints;
                ALTER TABLE checkpoints_v2 RENAME TO checkpoints;
                """)
                try database.setUserVersion(formatVersion)
            }
        }
    }

    /// The checkpoints table of format version 2: parameter values and momentum by module and lap.
    static func checkpointsTable(_ name: String) -> String {
        """
        CREATE TABLE \(name) (
            module INTEGER NOT NULL, lap INTEGER NOT NULL, name TEXT NOT NULL,
            kind TEXT NOT NULL,               -- value | momentum
            shape TEXT NOT NULL, checksum INTEGER NOT NULL, data BLOB NOT NULL,  -- fp32 values
            PRIMARY KEY (module, lap, name, kind)
        );
        """
    }

    /// The lap a version-1 checkpoint row belongs to: its module's latest lap (0 if none recorded).
    static let version1CheckpointLap = "coalesce((SELECT max(m.lap) FROM modules m WHERE m.module = checkpoints.module), 0)"

    /// The lap of a checkpoint row as SQL, for the open file's version (readers of version-1 files).
    var checkpointLapColumn: String { schemaVersion >= 2 ? "lap" : FeatureStore.version1CheckpointLap }

    /// The number of values a checkpoint's shape text ("[120]", "[8, 4]") describes; nil if it is not a shape.
    static func shapeCount(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("["), trimmed.hasSuffix("]") else { return nil }
        let parts = trimmed.dropFirst().dropLast().split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        var count = 1
        for part in parts {
            let (product, overflow) = count.multipliedReportingOverflow(by: part!)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Decodes a JSON column; a value that does not decode is damage, named by `what`.
    func decodeStored<T: Decodable>(_ type: T.Type, _ json: String, what: String) throws -> T {
        do { return try FeatureStore.decoder().decode(type, from: Data(json.utf8)) } catch let error as DecodingError {
            throw StoreError.damaged(path: path, what: "\(what) is not valid: \(FeatureStore.describe(error))")
        }
    }

    /// A decoding error in a line: where in the JSON, and what was wrong.
    static func describe(_ error: DecodingError) -> String {
        func at(_ path: [CodingKey]) -> String { path.isEmpty ? "" : " at '" + path.map(\.stringValue).joined(separator: ".") + "'" }
        switch error {
        case .keyNotFound(let key, let context): return "key '\(key.stringValue)' missing\(at(context.codingPath))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return context.debugDescription + at(context.codingPath)
        @unknown default: return "\(error)"
        }
    }

    // Stored state of the level writer and reader (their code is in FeatureStore+Levels.swift).
    /// Floats of the row buffer the run plan sized (``reserveRowBuffer(floats:)``); nil when
    /// the store is used without a plan (tests, benchmarks), which lets the buffer grow.
    var plannedRowFloats: Int?
    var shapes: [String: [Int]] = [:]
    var encodings: [String: String] = [:]
    /// Whether the `pages` table exists (``ensurePagesTable()``).
    var pagesReady = false

}

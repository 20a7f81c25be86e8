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

    /// Version of the schema and of the feature format (PRAGMA user_version).
    public static let formatVersion: Int32 = 1

    public let database: Database
    public let path: String
    public let encoding: FeatureEncoding
    let ledger: MemoryLedger?
    /// Encode/decode scratch for one sample (counted as I/O buffers).
    var scratch: Tensor?
    /// Bytes written to and read from feature rows (for the emulated device's storage time).
    public private(set) var bytesWritten = 0
    public private(set) var bytesRead = 0
    public private(set) var operations = 0

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
        try FeatureStore.migrate(database, path: path)
        try database.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -\(cacheKiB);")
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
                CREATE TABLE checkpoints (
                    module INTEGER NOT NULL, name TEXT NOT NULL,
                    kind TEXT NOT NULL,               -- value | momentum
                    shape TEXT NOT NULL, checksum INTEGER NOT NULL, data BLOB NOT NULL,  -- fp32 values
                    PRIMARY KEY (module, name, kind)
                );
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
        }
    }

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

    // MARK: JSON (NaN and infinities are stored as strings: a diverged run must not crash the store)

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }

    // MARK: the run and its fingerprint

    /// What determines the features: the configuration, the data and the feature format.
    public struct RunIdentity: Codable, Equatable {
        public var configuration: TrainingConfiguration
        public var data: DataIdentity
        public var encoding: FeatureEncoding
        public var formatVersion: Int32

        public init(configuration: TrainingConfiguration, data: DataIdentity, encoding: FeatureEncoding,
                    formatVersion: Int32 = FeatureStore.formatVersion) {
            self.configuration = configuration; self.data = data; self.encoding = encoding; self.formatVersion = formatVersion
        }
    }

    /// The data set and subsets a run used.
    public struct DataIdentity: Codable, Equatable {
        public var dataset: String
        public var trainCount: Int
        public var testCount: Int
        /// CRC-32 of the training and test labels in order (identifies the subsets).
        public var labelsChecksum: UInt32

        public init(train: Dataset, test: Dataset) {
            dataset = train.name + " / " + test.name
            trainCount = train.count
            testCount = test.count
            let labels = (train.labels + test.labels).map { UInt8($0) }
            labelsChecksum = labels.withUnsafeBytes { checksum($0) }
        }
    }

    /// Fingerprint of an identity: FNV-1a 64 of its JSON with sorted keys.
    public static func fingerprint(_ identity: RunIdentity) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(identity)) ?? Data()
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in json { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(format: "%016llx", hash)
    }

    /// The stored identity, if the store has a run.
    public func storedIdentity() throws -> RunIdentity? {
        let statement = try database.prepare("SELECT configuration, data, feature_encoding FROM run WHERE id = 1")
        guard try statement.step() else { return nil }
        let decoder = FeatureStore.decoder()
        let configuration = try decoder.decode(TrainingConfiguration.self, from: Data(statement.string(0).utf8))
        let data = try decoder.decode(DataIdentity.self, from: Data(statement.string(1).utf8))
        return RunIdentity(configuration: configuration, data: data,
                           encoding: FeatureEncoding(rawValue: statement.string(2)) ?? .fp32, formatVersion: FeatureStore.formatVersion)
    }

    public enum OpenOutcome: Equatable { case created, resumed, restarted }

    /// Binds the store to a run. An empty store records it; a store of the same run is resumed
    /// (its completed modules are reused); a store of another run is refused with the
    /// differences unless `fresh`, which empties it first.
    public func begin(_ identity: RunIdentity, fresh: Bool) throws -> OpenOutcome {
        labelLimit = identity.configuration.model.classes
        if replacedFile != nil {
            try record(identity)
            return .restarted
        }
        if fresh, try database.integer("SELECT count(*) FROM run") ?? 0 > 0 {
            // Cleared without reading the old record: --fresh works even when it cannot be decoded.
            try clear()
            try record(identity)
            return .restarted
        }
        let stored: RunIdentity?
        do { stored = try storedIdentity() } catch let error as DecodingError {
            throw StoreError.damaged(path: path, what: "its run record (table run) cannot be decoded: \(FeatureStore.describe(error))")
        }
        if let stored {
            let differences = FeatureStore.differences(stored, identity)
            guard differences.isEmpty else { throw StoreError.fingerprintMismatch(path: path, differences: differences) }
            try checkResumable(identity)
            return .resumed
        }
        // No run record: only an empty store may take a run, or modules of another run would be reused.
        for table in ["levels", "modules", "checkpoints"] where try database.integer("SELECT count(*) FROM \(table)") ?? 0 > 0 {
            throw StoreError.damaged(path: path, what: "its run record (table run) is missing but table \(table) holds rows: "
                + "what they belong to cannot be told")
        }
        try record(identity)
        return .created
    }

    /// Before a resume: the file is whole pages, every module record has a known status, the
    /// levels are the run's (``checkLevels(against:)``), and in sequential runs a completed
    /// module's output level is complete.
    /// - Throws: ``StoreError/damaged`` naming what is wrong.
    func checkResumable(_ identity: RunIdentity) throws {
        // A file cut or extended by a few bytes can still read: SQLite reads a short last page as whole.
        let pageSize = try database.integer("PRAGMA page_size") ?? 4096
        let bytes = StoreFile.fileSize(StoreFile.resolve(path))
        if pageSize > 0 && bytes % pageSize != 0 {
            throw StoreError.damaged(path: path, what: "its size, \(bytes) bytes, is not a whole number of \(pageSize)-byte pages (the file was truncated or appended to)")
        }
        let statuses = try database.prepare("SELECT module, lap, status, epochs_done FROM modules WHERE status NOT IN ('training', 'complete') OR epochs_done < 0")
        if try statuses.step() {
            throw StoreError.damaged(path: path, what: "module \(statuses.int(0) + 1) lap \(statuses.int(1) + 1) has status '\(statuses.string(2))' and \(statuses.int(3)) epochs done in table modules")
        }
        try checkLevels(against: identity.data)
        if identity.configuration.procedure == .sequential {
            // A completed module's output level is complete (sequential: nothing rewrites it later).
            let outputs = try database.prepare("""
                SELECT m.module, s.split FROM modules m, (SELECT 'train' AS split UNION ALL SELECT 'test') s
                WHERE m.status = 'complete' AND NOT EXISTS (SELECT 1 FROM levels l WHERE l.level = m.module + 1 AND l.split = s.split AND l.complete = 1)
                """)
            if try outputs.step() {
                throw StoreError.damaged(path: path, what: "module \(outputs.int(0) + 1) is complete but its output level \(outputs.int(0) + 1) \(outputs.string(1)) is not")
            }
        }
    }

    /// Every complete level holds one row per sample of the run's data, rows 0..<n exactly (its
    /// keys only; ``source(level:split:)`` checks again when it is read), with the run's labels.
    func checkLevels(against data: DataIdentity) throws {
        let levels = try database.prepare("SELECT level, split FROM levels WHERE complete = 1 ORDER BY level, split")
        var complete: [(Int, Split)] = []
        while try levels.step() {
            guard let split = Split(rawValue: levels.string(1)) else {
                throw StoreError.damaged(path: path, what: "table levels names an unknown split '\(levels.string(1))'")
            }
            complete.append((levels.int(0), split))
        }
        for (level, split) in complete {
            let source = try self.source(level: level, split: split)
            let samples = split == .train ? data.trainCount : data.testCount
            guard source.count == samples else {
                throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) holds \(source.count) rows but the run has \(samples) \(split.rawValue) samples")
            }
        }
        // Each level's labels, train then test, are the run's (its data identity's checksum).
        for level in Set(complete.map(\.0)).sorted() where complete.contains(where: { $0 == (level, .train) }) && complete.contains(where: { $0 == (level, .test) }) {
            let sum = try labelsChecksum(level: level)
            guard sum == data.labelsChecksum else {
                throw StoreError.damaged(path: path, what: "the labels of level \(level) are not the run's (their checksum is \(sum), the run's \(data.labelsChecksum))")
            }
        }
    }

    /// CRC-32 of a level's labels in row order, train then test (as ``DataIdentity`` computes it),
    /// chained one label at a time: no buffer of all the labels.
    func labelsChecksum(level: Int) throws -> UInt32 {
        var sum: UInt32 = 0
        for split in [Split.train, .test] {
            let base = FeatureStore.rowID(level: level, split: split, row: 0)
            let statement = try database.prepare("SELECT label FROM features WHERE id >= ? AND id < ? ORDER BY id")
            try statement.bind([base, base + (1 << 32)])
            while try statement.step() {
                sum = withUnsafeBytes(of: UInt8(truncatingIfNeeded: statement.int(0))) { checksum($0, seed: sum) }
            }
        }
        return sum
    }

    func record(_ identity: RunIdentity) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let configuration = String(decoding: try encoder.encode(identity.configuration), as: UTF8.self)
        let data = String(decoding: try encoder.encode(identity.data), as: UTF8.self)
        try database.prepare("INSERT INTO run (id, configuration, data, fingerprint, feature_encoding, created) VALUES (1, ?, ?, ?, ?, ?)")
            .run([configuration, data, FeatureStore.fingerprint(identity), identity.encoding.rawValue,
                  ISO8601DateFormatter().string(from: Date())])
    }

    /// Empties every table (for --fresh).
    public func clear() throws {
        shapes = [:]
        encodings = [:]
        try database.transaction {
            try database.execute("DELETE FROM run; DELETE FROM levels; DELETE FROM features; DELETE FROM modules; DELETE FROM checkpoints; DELETE FROM metrics; DELETE FROM report;")
        }
    }

    /// Human-readable differences between two identities ("width: 16 in the store, 32 requested").
    public static func differences(_ stored: RunIdentity, _ requested: RunIdentity) -> [String] {
        func flatten(_ value: Any, prefix: String, into result: inout [String: String]) {
            if let dictionary = value as? [String: Any] {
                for (key, inner) in dictionary { flatten(inner, prefix: prefix.isEmpty ? key : prefix + "." + key, into: &result) }
            } else {
                result[prefix] = "\(value)"
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let a = try? JSONSerialization.jsonObject(with: encoder.encode(stored)),
              let b = try? JSONSerialization.jsonObject(with: encoder.encode(requested)) else { return ["unreadable run record"] }
        var left: [String: String] = [:], right: [String: String] = [:]
        flatten(a, prefix: "", into: &left)
        flatten(b, prefix: "", into: &right)
        return Set(left.keys).union(right.keys).sorted().compactMap { key in
            left[key] == right[key] ? nil : "\(key): \(left[key] ?? "absent") in the store, \(right[key] ?? "absent") requested"
        }
    }

    // MARK: memory

    /// Counts SQLite's own memory (page cache, statements) in the ledger's store-engine category.
    func accountEngineMemory() throws {
        guard let ledger else { return }
        try ledger.setExternal(Database.memoryUsed().current, category: .storeEngine, tag: "sqlite")
    }

    /// Floats of the row buffer the run plan sized (``reserveRowBuffer(floats:)``); nil when
    /// the store is used without a plan (tests, benchmarks), which lets the buffer grow.
    var plannedRowFloats: Int?

    func scratchBuffer(count: Int) throws -> UnsafeMutablePointer<Float> {
        if let scratch, scratch.count >= count { return scratch.data }
        // The plan and the store must agree by construction: a planned buffer too small for a
        // level is a bug, not something to paper over with an unplanned allocation.
        precondition(plannedRowFloats == nil || count <= plannedRowFloats!,
                     "the run plan sized the store's row buffer at \(plannedRowFloats ?? 0) floats, but a level needs \(count)")
        scratch = nil
        let ledger = self.ledger ?? MemoryLedger()
        scratch = try Tensor([count], category: .ioBuffers, tag: "store.row", ledger: ledger)
        return scratch!.data
    }

    /// Allocates the row buffer up front (sized by the run plan), so the store's I/O memory is
    /// constant through the run.
    public func reserveRowBuffer(floats: Int) throws {
        if floats > 0 { _ = try scratchBuffer(count: floats) }
        plannedRowFloats = floats
    }

    // MARK: levels (FeatureCache)

    static func rowID(level: Int, split: Split, row: Int) -> Int64 {
        (Int64(level) << 33) | (Int64(split == .test ? 1 : 0) << 32) | Int64(row)
    }

    public var keepsLevels: Bool { true }

    public func beginLevel(_ level: Int, split: Split, count: Int, shape: [Int]) throws {
        shapes["\(level).\(split)"] = shape
        encodings["\(level).\(split)"] = nil
        try database.transaction {
            try database.prepare("DELETE FROM features WHERE id >= ? AND id < ?")
                .run([FeatureStore.rowID(level: level, split: split, row: 0), FeatureStore.rowID(level: level, split: split, row: 0) + (1 << 32)])
            try database.prepare("INSERT OR REPLACE INTO levels (level, split, channels, height, width, encoding, row_count, complete) VALUES (?, ?, ?, ?, ?, ?, ?, 0)")
                .run([level, split.rawValue, shape[0], shape[1], shape[2], encoding.rawValue, count])
        }
        try accountEngineMemory()
    }

    public func write(level: Int, split: Split, offset: Int, rows: Int,
                      values: UnsafePointer<Float>, labels: UnsafePointer<Int32>) throws {
        let shape = try levelShape(level, split: split)
        let size = shape.reduce(1, *)
        let bytes = size * encoding.bytesPerValue
        // fp32 rows are bound straight from the batch (SQLite copies them); the others are
        // encoded into the row buffer first.
        let rowFloats = encoding.rowBufferFloats(shape: shape)
        let buffer: UnsafeMutableRawPointer? = rowFloats == 0 ? nil : UnsafeMutableRawPointer(try scratchBuffer(count: rowFloats))
        try database.transaction {
            let insert = try database.prepare("INSERT INTO features (id, level, split, row, label, checksum, data) VALUES (?, ?, ?, ?, ?, ?, ?)")
            for r in 0..<rows {
                let row: UnsafeRawPointer
                if let buffer {
                    encoding.encode(values + r * size, count: size, into: buffer)
                    row = UnsafeRawPointer(buffer)
                } else {
                    row = UnsafeRawPointer(values + r * size)
                }
                var sum = checksum(UnsafeRawBufferPointer(start: row, count: bytes))
                sum = withUnsafeBytes(of: labels[r].littleEndian) { checksum($0, seed: sum) }
                insert.reset()
                try insert.bind([FeatureStore.rowID(level: level, split: split, row: offset + r), level, split.rawValue,
                                 offset + r, Int(labels[r]), Int(sum)])
                try insert.bindBlob(6, row, count: bytes)
                try insert.step()
            }
        }
        bytesWritten += rows * bytes
        operations += 1
        try accountEngineMemory()
    }

    public func finishLevel(_ level: Int, split: Split) throws {
        try database.prepare("UPDATE levels SET complete = 1 WHERE level = ? AND split = ?").run([level, split.rawValue])
        try accountEngineMemory()
    }

    public func dropLevel(_ level: Int, split: Split) throws {}

    var shapes: [String: [Int]] = [:]

    func levelShape(_ level: Int, split: Split) throws -> [Int] {
        if let shape = shapes["\(level).\(split)"] { return shape }
        let statement = try database.prepare("SELECT channels, height, width FROM levels WHERE level = ? AND split = ?")
        try statement.bind([level, split.rawValue])
        guard try statement.step() else { throw StoreError.missingLevel(path: path, level: level, split: split.rawValue) }
        let shape = [statement.int(0), statement.int(1), statement.int(2)]
        guard FeatureStore.isValidSampleShape(shape) else {
            throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) has the shape \(shape.map(String.init).joined(separator: "x")) in table levels")
        }
        shapes["\(level).\(split)"] = shape
        return shape
    }

    public func source(level: Int, split: Split) throws -> SampleSource {
        let statement = try database.prepare("SELECT row_count, complete FROM levels WHERE level = ? AND split = ?")
        try statement.bind([level, split.rawValue])
        guard try statement.step(), statement.int(1) == 1 else {
            throw StoreError.missingLevel(path: path, level: level, split: split.rawValue)
        }
        let rowCount = statement.int(0)
        // The rows must be exactly 0..<row_count: a level with a row deleted (or its metadata
        // changed) is damage, found here rather than as a different run. One pass over the
        // level's keys (no row data is read).
        let (count, first, last) = try rowSpan(level: level, split: split)
        guard count == rowCount, rowCount == 0 || (first == 0 && last == rowCount - 1) else {
            throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) should hold rows 0..<\(rowCount) (table levels) "
                + "but table features has \(count) rows for it" + (count > 0 ? ", from \(first) to \(last)" : ""))
        }
        return try LevelReader(store: self, level: level, split: split, count: rowCount,
                               shape: try levelShape(level, split: split))
    }

    /// Writes level 0 (the normalised images) unless it is already complete, and reads it back.
    public func inputSources(train: Dataset, test: Dataset) throws -> (train: SampleSource, test: SampleSource) {
        for (split, dataset) in [(Split.train, train), (.test, test)] {
            if try isComplete(level: 0, split: split) { continue }
            try beginLevel(0, split: split, count: dataset.count, shape: dataset.sampleShape)
            // Staging for level 0, outside the ledger (the images come from the host's data set,
            // which the device would read from storage): kept to 16 samples.
            let batch = 16
            let values = UnsafeMutablePointer<Float>.allocate(capacity: batch * dataset.sampleSize)
            let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
            defer { values.deallocate(); labels.deallocate() }
            var offset = 0
            while offset < dataset.count {
                let rows = min(batch, dataset.count - offset)
                dataset.fillBatch(indices: Array(offset..<(offset + rows))[...], images: values, labels: labels)
                try write(level: 0, split: split, offset: offset, rows: rows, values: values, labels: labels)
                offset += rows
            }
            try finishLevel(0, split: split)
        }
        return (try source(level: 0, split: .train), try source(level: 0, split: .test))
    }

    public func isComplete(level: Int, split: Split) throws -> Bool {
        try database.integer("SELECT complete FROM levels WHERE level = ? AND split = ?", [level, split.rawValue]) == 1
    }

    /// Reads one row: decodes its values into `values`, returns its label; verifies its checksum.
    func readRow(_ statement: Statement, level: Int, split: Split, row: Int, size: Int, encoding: FeatureEncoding,
                 into values: UnsafeMutablePointer<Float>) throws -> Int32 {
        statement.reset()
        try statement.bind([FeatureStore.rowID(level: level, split: split, row: row)])
        guard try statement.step() else { throw StoreError.corruptRow(path: path, level: level, split: split.rawValue, row: row) }
        let label = Int32(truncatingIfNeeded: statement.int(0))
        let stored = UInt32(truncatingIfNeeded: statement.int(1))
        let blob = statement.blob(2)
        var sum = checksum(blob)
        sum = withUnsafeBytes(of: label.littleEndian) { checksum($0, seed: sum) }
        guard sum == stored, blob.count == size * encoding.bytesPerValue else {
            throw StoreError.corruptRow(path: path, level: level, split: split.rawValue, row: row)
        }
        guard label >= 0, label < labelLimit else {
            throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) sample \(row) has label \(label); the run's classes are 0...\(labelLimit - 1)")
        }
        encoding.decode(blob.baseAddress!, count: size, into: values)
        bytesRead += blob.count
        return label
    }

    var encodings: [String: String] = [:]
    func levelEncoding(_ level: Int, split: Split) throws -> String {
        if let e = encodings["\(level).\(split)"] { return e }
        let statement = try database.prepare("SELECT encoding FROM levels WHERE level = ? AND split = ?")
        try statement.bind([level, split.rawValue])
        let value = try statement.step() ? statement.string(0) : encoding.rawValue
        guard FeatureEncoding(rawValue: value) != nil else {
            throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) has the encoding '\(value)' in table levels")
        }
        encodings["\(level).\(split)"] = value
        return value
    }

    /// A complete level read in batches of row indices (shuffled reads are random rowid look-ups).
    final class LevelReader: SampleSource {
        let store: FeatureStore
        let level: Int
        let split: Split
        let count: Int
        let sampleShape: [Int]
        let encoding: FeatureEncoding
        let statement: Statement

        init(store: FeatureStore, level: Int, split: Split, count: Int, shape: [Int]) throws {
            self.store = store; self.level = level; self.split = split; self.count = count; self.sampleShape = shape
            encoding = FeatureEncoding(rawValue: try store.levelEncoding(level, split: split)) ?? store.encoding
            statement = try store.database.prepare("SELECT label, checksum, data FROM features WHERE id = ?")
        }

        func fill(indices: ArraySlice<Int>, into values: UnsafeMutablePointer<Float>,
                  labels: UnsafeMutablePointer<Int32>) throws {
            let size = sampleShape.reduce(1, *)
            for (offset, index) in indices.enumerated() {
                labels[offset] = try store.readRow(statement, level: level, split: split, row: index, size: size,
                                                   encoding: encoding, into: values + offset * size)
            }
            store.operations += indices.count  // each row is a random look-up
            statement.reset()
            try store.accountEngineMemory()
        }
    }

    // MARK: checkpoints and metrics (TrainingJournal)

    public func completedModule(_ module: Int, lap: Int) throws -> CompletedModule? {
        let statement = try database.prepare("SELECT state FROM modules WHERE module = ? AND lap = ? AND status = 'complete'")
        try statement.bind([module, lap])
        guard try statement.step() else { return nil }
        var completed = try decodeStored(CompletedModule.self, statement.string(0), what: "modules.state of module \(module + 1) lap \(lap + 1)")
        completed.parameters = try loadParameters(module: module, kind: "value")
        return completed
    }

    public func epochCheckpoint(_ module: Int, lap: Int) throws -> EpochCheckpoint? {
        let statement = try database.prepare("SELECT state FROM modules WHERE module = ? AND lap = ? AND status = 'training'")
        try statement.bind([module, lap])
        guard try statement.step() else { return nil }
        var checkpoint = try decodeStored(EpochCheckpoint.self, statement.string(0), what: "modules.state of module \(module + 1) lap \(lap + 1)")
        checkpoint.parameters = try loadParameters(module: module, kind: "value")
        checkpoint.momentum = try loadParameters(module: module, kind: "momentum")
        return checkpoint
    }

    public func saveEpochCheckpoint(_ checkpoint: EpochCheckpoint) throws {
        var light = checkpoint
        light.parameters = [:]
        light.momentum = [:]
        let state = String(decoding: try FeatureStore.encoder().encode(light), as: UTF8.self)
        try database.transaction {
            try saveParameters(module: checkpoint.module, kind: "value", checkpoint.parameters)
            try saveParameters(module: checkpoint.module, kind: "momentum", checkpoint.momentum)
            try database.prepare("INSERT OR REPLACE INTO modules (module, lap, status, epochs_done, state) VALUES (?, ?, 'training', ?, ?)")
                .run([checkpoint.module, checkpoint.lap, checkpoint.epochsDone, state])
            if let log = checkpoint.logs.last { try saveMetric(log) }
        }
        try accountEngineMemory()
    }

    public func saveCompletedModule(_ completed: CompletedModule) throws {
        var light = completed
        light.parameters = [:]
        let encoder = FeatureStore.encoder()
        let state = String(decoding: try encoder.encode(light), as: UTF8.self)
        let evaluation = String(decoding: try encoder.encode(completed.evaluation), as: UTF8.self)
        try database.transaction {
            try database.prepare("DELETE FROM checkpoints WHERE module = ? AND kind = 'momentum'").run([completed.module])
            try saveParameters(module: completed.module, kind: "value", completed.parameters)
            try database.prepare("INSERT OR REPLACE INTO modules (module, lap, status, epochs_done, state, evaluation) VALUES (?, ?, 'complete', ?, ?, ?)")
                .run([completed.module, completed.lap, completed.logs.count, state, evaluation])
            for log in completed.logs { try saveMetric(log) }
        }
        try accountEngineMemory()
    }

    func saveMetric(_ log: EpochLog) throws {
        let json = String(decoding: try FeatureStore.encoder().encode(log), as: UTF8.self)
        try database.prepare("""
            INSERT OR REPLACE INTO metrics (module, lap, epoch, task_loss, kinetic_energy, train_accuracy, learning_rate, transport_weight, log)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).run([log.module, log.lap, log.epoch, log.taskLoss, log.kineticEnergy, log.trainAccuracy, log.learningRate,
                      log.transportWeight, json])
    }

    func saveParameters(module: Int, kind: String, _ values: [String: [Float]]) throws {
        let insert = try database.prepare("INSERT OR REPLACE INTO checkpoints (module, name, kind, shape, checksum, data) VALUES (?, ?, ?, ?, ?, ?)")
        for (name, array) in values.sorted(by: { $0.key < $1.key }) {
            try array.withUnsafeBytes { bytes in
                insert.reset()
                try insert.bind([module, name, kind, "[\(array.count)]", Int(checksum(bytes))])
                try insert.bindBlob(5, bytes.baseAddress!, count: bytes.count)
                try insert.step()
            }
        }
    }

    func loadParameters(module: Int, kind: String) throws -> [String: [Float]] {
        let statement = try database.prepare("SELECT name, checksum, data, shape FROM checkpoints WHERE module = ? AND kind = ?")
        try statement.bind([module, kind])
        var result: [String: [Float]] = [:]
        while try statement.step() {
            let blob = statement.blob(2)
            guard checksum(blob) == UInt32(truncatingIfNeeded: statement.int(1)) else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) fails its checksum")
            }
            // SQLite's page memory need not be aligned for Float: copy the bytes.
            guard blob.count % 4 == 0 else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) has \(blob.count) bytes, not whole floats")
            }
            let declared = FeatureStore.shapeCount(statement.string(3))
            guard declared == blob.count / 4 else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) has \(blob.count / 4) values but the shape '\(statement.string(3))'")
            }
            var values = [Float](repeating: 0, count: blob.count / 4)
            values.withUnsafeMutableBytes { $0.copyMemory(from: blob) }
            result[statement.string(0)] = values
        }
        return result
    }

    /// The evaluations of the completed modules of the last lap recorded, in module order.
    public func evaluations() throws -> [ModuleEvaluation] {
        let statement = try database.prepare("SELECT evaluation, module, lap FROM modules WHERE status = 'complete' AND lap = (SELECT max(lap) FROM modules WHERE status = 'complete') ORDER BY module")
        var result: [ModuleEvaluation] = []
        while try statement.step() {
            result.append(try decodeStored(ModuleEvaluation.self, statement.string(0),
                                           what: "modules.evaluation of module \(statement.int(1) + 1) lap \(statement.int(2) + 1)"))
        }
        return result
    }

    /// Saves the run's report (JSON) so `blockwise report` can re-render it.
    public func saveReport(_ json: String) throws {
        try database.prepare("INSERT OR REPLACE INTO report (id, json) VALUES (1, ?)").run([json])
    }

    /// The saved report, if the run finished.
    public func savedReport() throws -> String? {
        let statement = try database.prepare("SELECT json FROM report WHERE id = 1")
        return try statement.step() ? statement.string(0) : nil
    }

    /// All epoch logs in order.
    public func epochLogs() throws -> [EpochLog] {
        let statement = try database.prepare("SELECT log, module, lap, epoch FROM metrics ORDER BY lap, module, epoch")
        var result: [EpochLog] = []
        while try statement.step() {
            result.append(try decodeStored(EpochLog.self, statement.string(0),
                                           what: "metrics.log of module \(statement.int(1) + 1) lap \(statement.int(2) + 1) epoch \(statement.int(3) + 1)"))
        }
        return result
    }
}

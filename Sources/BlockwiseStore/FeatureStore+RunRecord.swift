import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// The run record: its JSON, the run's identity and fingerprint, resume checks.
extension FeatureStore {
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
                    formatVersion: Int32 = FeatureStore.featureFormatVersion) {
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
                           encoding: FeatureEncoding(rawValue: statement.string(2)) ?? .fp32, formatVersion: FeatureStore.featureFormatVersion)
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
        try checkLevels(against: identity)
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

    /// Every complete level holds one row per sample of the run's data (per view of a training
    /// sample with `--augmented-inputs pool=N`), rows 0..<n exactly (its keys only;
    /// ``source(level:split:)`` checks again when it is read), with the run's labels.
    func checkLevels(against identity: RunIdentity) throws {
        let data = identity.data
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
            let rows = identity.configuration.levelRows(level, split: split, samples: split == .train ? data.trainCount : data.testCount)
            guard source.count == rows else {
                throw StoreError.damaged(path: path, what: "level \(level) \(split.rawValue) holds \(source.count) rows but the run needs \(rows)")
            }
        }
        // Each level's labels, train then test, are the run's (its data identity's checksum).
        for level in Set(complete.map(\.0)).sorted() where complete.contains(where: { $0 == (level, .train) }) && complete.contains(where: { $0 == (level, .test) }) {
            if let sum = try labelsMismatch(level: level, identity: identity) {
                throw StoreError.damaged(path: path, what: "the labels of level \(level) are not the run's (their checksum is \(sum), the run's \(data.labelsChecksum))")
            }
        }
    }

    /// The checksum of the first view of level `level` whose labels (train then test) are not the
    /// run's, or nil when every view's are (one view but with `pool=N`).
    func labelsMismatch(level: Int, identity: RunIdentity) throws -> UInt32? {
        let samples = identity.data.trainCount
        let views = level > 0 ? identity.configuration.poolViews : 1
        for view in 0..<views {
            let sum = try labelsChecksum(level: level, trainRows: views == 1 ? nil : (view * samples)..<((view + 1) * samples))
            if sum != identity.data.labelsChecksum { return sum }
        }
        return nil
    }

    /// CRC-32 of a level's labels in row order, train (all rows, or `trainRows`) then test (as
    /// ``DataIdentity`` computes it), chained one label at a time: no buffer of all the labels.
    func labelsChecksum(level: Int, trainRows: Range<Int>? = nil) throws -> UInt32 {
        var sum: UInt32 = 0
        for split in [Split.train, .test] {
            let base = FeatureStore.rowID(level: level, split: split, row: 0)
            let statement = try database.prepare("SELECT label FROM features WHERE id >= ? AND id < ? ORDER BY id")
            if split == .train, let trainRows {
                try statement.bind([base + Int64(trainRows.lowerBound), base + Int64(trainRows.upperBound)])
            } else {
                try statement.bind([base, base + (1 << 32)])
            }
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
        /// A value as it reads: a Boolean as true/false (JSON gives NSNumber), an enum case with
        /// its values (Swift encodes `.pool(views: 3)` as {"pool": {"views": 3}}) as pool(views: 3).
        func text(_ value: Any) -> String {
            if let number = value as? NSNumber, String(cString: number.objCType) == "c" { return number.boolValue ? "true" : "false" }
            if let dictionary = value as? [String: Any], dictionary.count == 1, let (name, inner) = dictionary.first,
               let values = inner as? [String: Any] {
                let fields = values.keys.sorted().map { "\($0): \(text(values[$0]!))" }
                return name + (fields.isEmpty ? "" : "(" + fields.joined(separator: ", ") + ")")
            }
            return "\(value)"
        }
        func flatten(_ value: Any, prefix: String, into result: inout [String: String]) {
            if let dictionary = value as? [String: Any], !(dictionary.count == 1 && dictionary.first!.value is [String: Any]) {
                for (key, inner) in dictionary { flatten(inner, prefix: prefix.isEmpty ? key : prefix + "." + key, into: &result) }
            } else {
                result[prefix] = text(value)
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
}

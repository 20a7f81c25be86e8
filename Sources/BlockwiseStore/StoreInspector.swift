import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// A level's description for `blockwise cache ls`.
public struct LevelInfo: Codable, Sendable {
    public var level: Int
    public var split: String
    public var shape: [Int]
    public var encoding: String
    public var rows: Int
    public var complete: Bool
    public var bytesOnDisk: Int
}

/// What `cache ls` prints: the run, its levels and its modules.
public struct StoreInfo: Codable, Sendable {
    public var path: String
    public var fileBytes: Int
    public var formatVersion: Int32
    public var fingerprint: String?
    public var configuration: String?
    public var data: String?
    public var levels: [LevelInfo]
    /// (module, lap, status, epochs done)
    public var modules: [String]
    public var checkpointBytes: Int
}

/// Per-channel statistics of a level (`cache stats`).
public struct LevelStatistics: Codable, Sendable {
    public struct Channel: Codable, Sendable {
        public var mean: Double, std: Double, min: Float, max: Float
    }
    public var level: Int
    public var split: String
    public var rows: Int
    public var channels: [Channel]
    /// Mean over samples of ||x||^2 / (C H W): how large the features are; its change from one
    /// level to the next is the picture the kinetic energy describes.
    public var meanSquaredNorm: Double
}

/// Read-only inspection of a store (and `vacuum`).
public enum StoreInspector {
    public static func info(_ store: FeatureStore) throws -> StoreInfo {
        let db = store.database
        let attributes = try? FileManager.default.attributesOfItem(atPath: store.path)
        var info = StoreInfo(path: store.path, fileBytes: (attributes?[.size] as? Int) ?? 0,
                             formatVersion: try db.userVersion, fingerprint: nil, configuration: nil, data: nil,
                             levels: [], modules: [], checkpointBytes: 0)
        let run = try db.prepare("SELECT fingerprint, configuration, data FROM run WHERE id = 1")
        if try run.step() {
            info.fingerprint = run.string(0)
            info.configuration = run.string(1)
            info.data = run.string(2)
        }
        let levels = try db.prepare("""
            SELECT l.level, l.split, l.channels, l.height, l.width, l.encoding, l.row_count, l.complete,
                   (SELECT coalesce(sum(length(data)), 0) FROM features f WHERE f.id >= ((l.level << 33) | ((l.split = 'test') << 32))
                                                                  AND f.id < ((l.level << 33) | ((l.split = 'test') << 32)) + (1 << 32))
            FROM levels l ORDER BY l.level, l.split DESC
            """)
        while try levels.step() {
            info.levels.append(LevelInfo(level: levels.int(0), split: levels.string(1),
                                         shape: [levels.int(2), levels.int(3), levels.int(4)], encoding: levels.string(5),
                                         rows: levels.int(6), complete: levels.int(7) == 1, bytesOnDisk: levels.int(8)))
        }
        let modules = try db.prepare("SELECT module, lap, status, epochs_done FROM modules ORDER BY lap, module")
        while try modules.step() {
            info.modules.append("module \(modules.int(0) + 1) lap \(modules.int(1) + 1): \(modules.string(2)), \(modules.int(3)) epochs")
        }
        info.checkpointBytes = try db.integer("SELECT coalesce(sum(length(data)), 0) FROM checkpoints") ?? 0
        return info
    }

    /// Per-channel mean / std / min / max and the mean squared norm of a level's samples.
    /// Memory: one sample at a time.
    public static func statistics(_ store: FeatureStore, level: Int, split: Split) throws -> LevelStatistics {
        let source = try store.source(level: level, split: split)
        let shape = source.sampleShape
        let channels = shape[0], spatial = shape[1] * shape[2]
        var sums = [Double](repeating: 0, count: channels), squares = sums
        var minimum = [Float](repeating: .infinity, count: channels), maximum = [Float](repeating: -.infinity, count: channels)
        var norms = 0.0
        var values = [Float](repeating: 0, count: channels * spatial)
        var label: Int32 = 0
        for row in 0..<source.count {
            try values.withUnsafeMutableBufferPointer { try source.fill(indices: [row][...], into: $0.baseAddress!, labels: &label) }
            var norm = 0.0
            for c in 0..<channels {
                for i in 0..<spatial {
                    let v = values[c * spatial + i]
                    sums[c] += Double(v)
                    squares[c] += Double(v) * Double(v)
                    minimum[c] = Swift.min(minimum[c], v)
                    maximum[c] = Swift.max(maximum[c], v)
                }
            }
            for v in values { norm += Double(v) * Double(v) }
            norms += norm / Double(values.count)
        }
        let n = Double(source.count * spatial)
        let stats = (0..<channels).map { c -> LevelStatistics.Channel in
            let mean = sums[c] / n
            return .init(mean: mean, std: Swift.max(0, squares[c] / n - mean * mean).squareRoot(), min: minimum[c], max: maximum[c])
        }
        return LevelStatistics(level: level, split: split.rawValue, rows: source.count, channels: stats,
                               meanSquaredNorm: norms / Double(Swift.max(source.count, 1)))
    }

    /// "6 (Shirt)" for a Fashion-MNIST store, "6" otherwise: a label as a person reads it.
    public static func labelName(_ store: FeatureStore, _ label: Int32) -> String {
        guard let dataset = (try? store.storedIdentity())??.data.dataset, dataset.hasPrefix("fashion-mnist"),
              label >= 0, Int(label) < FashionMNIST.classNames.count else { return "\(label)" }
        return "\(label) (\(FashionMNIST.classNames[Int(label)]))"
    }

    /// One sample's values [C, H, W] and label.
    public static func sample(_ store: FeatureStore, level: Int, split: Split, index: Int) throws -> (values: [Float], shape: [Int], label: Int32) {
        let source = try store.source(level: level, split: split)
        guard index >= 0 && index < source.count else {
            throw StoreError.invalidArgument("--sample \(index) is outside 0..<\(source.count) for level \(level) \(split.rawValue)")
        }
        var values = [Float](repeating: 0, count: source.sampleShape.reduce(1, *))
        var label: Int32 = 0
        try values.withUnsafeMutableBufferPointer { try source.fill(indices: [index][...], into: $0.baseAddress!, labels: &label) }
        return (values, source.sampleShape, label)
    }

    /// Writes a level as a NumPy .npy file (float32, shape [rows, C, H, W], C order), streaming
    /// one sample at a time; the labels go to a second file `<path minus .npy>-labels.npy` (int32).
    public static func exportNPY(_ store: FeatureStore, level: Int, split: Split, path: String) throws -> (rows: Int, labelsPath: String) {
        let source = try store.source(level: level, split: split)
        let shape = [source.count] + source.sampleShape
        let labelsPath = (path.hasSuffix(".npy") ? String(path.dropLast(4)) : path) + "-labels.npy"
        for output in [path, labelsPath] where StoreFile.isSameFile(output, store.path) {
            throw StoreError.invalidArgument("--output '\(output)' is the store itself: pass another file name")
        }
        guard FileManager.default.createFile(atPath: path, contents: NPY.header(dtype: "<f4", shape: shape)),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw OutputFileError(path: path, reason: Database.whyCannotOpen(path, readOnly: false) ?? "check the directory exists and is writable")
        }
        // A failed export leaves no partial file behind.
        var finished = false
        defer {
            try? handle.close()
            if !finished { try? FileManager.default.removeItem(atPath: path) }
        }
        do {
            try handle.seekToEnd()
            var values = [Float](repeating: 0, count: source.sampleShape.reduce(1, *))
            var labels = [Int32](repeating: 0, count: source.count)
            for row in 0..<source.count {
                try values.withUnsafeMutableBufferPointer { try source.fill(indices: [row][...], into: $0.baseAddress!, labels: &labels[row]) }
                try handle.write(contentsOf: values.withUnsafeBytes { Data($0) })
            }
            try handle.synchronize()
            var labelFile = NPY.header(dtype: "<i4", shape: [source.count])
            labelFile.append(labels.withUnsafeBytes { Data($0) })
            try labelFile.write(to: URL(fileURLWithPath: labelsPath), options: .atomic)
        } catch let error as StoreError {
            throw error
        } catch {
            throw OutputFileError(path: path, error: error)
        }
        finished = true
        return (source.count, labelsPath)
    }

    /// Rebuilds the file to reclaim free pages (the only command that writes).
    public static func vacuum(path: String) throws -> (before: Int, after: Int) {
        let size = { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }
        _ = try FeatureStore(readingAt: path)  // refuse what is not a store
        let lock = try StoreLock(storePath: path, purpose: "blockwise cache vacuum")
        defer { withExtendedLifetime(lock) {} }
        // Before: the file and any WAL a crashed writer left (the vacuum folds it in).
        let walSize = ((try? FileManager.default.attributesOfItem(atPath: path + "-wal"))?[.size] as? Int) ?? 0
        let before = size() + walSize
        let database = try Database(path: path, create: false)
        // Left in rollback-journal mode, as a finished run leaves it (see FeatureStore.deinit).
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA journal_mode = DELETE;")
        return (before, size())
    }
}

/// NumPy's .npy format, version 1.0.
public enum NPY {
    /// Magic, version, header length and the header dict padded with spaces to a multiple of 64 bytes.
    public static func header(dtype: String, shape: [Int]) -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(dtype)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(dict.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Array(dict.utf8))
        return data
    }
}

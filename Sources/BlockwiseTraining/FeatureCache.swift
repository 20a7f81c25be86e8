import BlockwiseData
import BlockwiseKernels

/// The train or the test split.
public enum Split: String, Codable, Sendable, CaseIterable { case train, test }

/// Samples that can be read in batches: the images (level 0) or a module's cached outputs.
public protocol SampleSource: AnyObject {
    var count: Int { get }
    /// [C, H, W] of one sample.
    var sampleShape: [Int] { get }
    /// Writes samples `indices` into `values` ([indices.count, C, H, W]) and their labels.
    func fill(indices: ArraySlice<Int>, into values: UnsafeMutablePointer<Float>,
              labels: UnsafeMutablePointer<Int32>) throws
}

/// Level 0: a data set, normalised on the fly.
public final class DatasetSource: SampleSource {
    public let dataset: Dataset
    public init(_ dataset: Dataset) { self.dataset = dataset }
    public var count: Int { dataset.count }
    public var sampleShape: [Int] { dataset.sampleShape }
    public func fill(indices: ArraySlice<Int>, into values: UnsafeMutablePointer<Float>,
                     labels: UnsafeMutablePointer<Int32>) throws {
        dataset.fillBatch(indices: indices, images: values, labels: labels)
    }
}

/// Where the procedures put the features between modules (level k = outputs of module k,
/// k >= 1 counted from 1). The SQLite feature store implements it on disk; ``InMemoryFeatureCache``
/// keeps them in (ledger-counted) memory.
public protocol FeatureCache: AnyObject {
    /// Starts (or restarts) level `level` of `split` for `count` samples of `shape`.
    func beginLevel(_ level: Int, split: Split, count: Int, shape: [Int]) throws
    /// Writes rows [offset, offset + rows) of a level that was begun.
    func write(level: Int, split: Split, offset: Int, rows: Int,
               values: UnsafePointer<Float>, labels: UnsafePointer<Int32>) throws
    /// Marks a level complete.
    func finishLevel(_ level: Int, split: Split) throws
    /// A reader of a complete level.
    func source(level: Int, split: Split) throws -> SampleSource
    /// Frees a level that is no longer needed.
    func dropLevel(_ level: Int, split: Split) throws
    /// Level 0 of both splits (the store writes the images into itself and reads them back).
    func inputSources(train: Dataset, test: Dataset) throws -> (train: SampleSource, test: SampleSource)
    /// Whether levels are kept after the run (a store keeps them for inspection).
    var keepsLevels: Bool { get }
    /// Bytes of features read from and written to storage, and storage operations (row
    /// look-ups, write transactions), for the emulated device's storage time.
    var bytesRead: Int { get }
    var bytesWritten: Int { get }
    var operations: Int { get }
    /// Bytes the cache's storage engine has written to the file system so far (nil: not on a
    /// file system, or not measured); what the device's storage time and wear count.
    var fileBytesWritten: Int? { get }
}

/// Features held in memory, one ledger-counted tensor per level and split (category I/O buffers).
/// For sequential training this is the simple, memory-hungry cache; the feature store keeps
/// levels on disk instead.
public final class InMemoryFeatureCache: FeatureCache {
    final class Level: SampleSource {
        let values: Tensor
        var labels: [Int32]
        let count: Int
        let sampleShape: [Int]
        init(values: Tensor, count: Int, shape: [Int]) {
            self.values = values; self.count = count; self.sampleShape = shape
            labels = [Int32](repeating: 0, count: count)
        }
        func fill(indices: ArraySlice<Int>, into destination: UnsafeMutablePointer<Float>,
                  labels labelDestination: UnsafeMutablePointer<Int32>) throws {
            let size = sampleShape.reduce(1, *)
            for (row, index) in indices.enumerated() {
                (destination + row * size).update(from: values.data + index * size, count: size)
                labelDestination[row] = labels[index]
            }
        }
    }

    let ledger: MemoryLedger
    var levels: [String: Level] = [:]

    public init(ledger: MemoryLedger) { self.ledger = ledger }

    func key(_ level: Int, _ split: Split) -> String { "level\(level).\(split.rawValue)" }

    public func beginLevel(_ level: Int, split: Split, count: Int, shape: [Int]) throws {
        levels[key(level, split)] = nil
        let values = try Tensor([count] + shape, category: .ioBuffers, tag: "features." + key(level, split), ledger: ledger)
        levels[key(level, split)] = Level(values: values, count: count, shape: shape)
    }

    public func write(level: Int, split: Split, offset: Int, rows: Int,
                      values: UnsafePointer<Float>, labels: UnsafePointer<Int32>) throws {
        let target = levels[key(level, split)]!
        let size = target.sampleShape.reduce(1, *)
        (target.values.data + offset * size).update(from: values, count: rows * size)
        for row in 0..<rows { target.labels[offset + row] = labels[row] }
    }

    public func finishLevel(_ level: Int, split: Split) throws {}

    public func source(level: Int, split: Split) throws -> SampleSource { levels[key(level, split)]! }

    public func dropLevel(_ level: Int, split: Split) throws { levels[key(level, split)] = nil }

    public var keepsLevels: Bool { false }
    public var bytesRead: Int { 0 }
    public var bytesWritten: Int { 0 }
    public var operations: Int { 0 }
    public var fileBytesWritten: Int? { nil }
}

import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// Feature write / shuffled-read throughput of the store against a plain file of the same
/// bytes (`blockwise bench cache`).
public enum StoreBenchmark {
    public struct Row: Sendable {
        public var name: String
        public var bytes: Int
        public var writeSeconds: Double
        public var readSeconds: Double
        public var writeMBps: Double { Double(bytes) / writeSeconds / 1e6 }
        public var readMBps: Double { Double(bytes) / readSeconds / 1e6 }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// `rows` samples of `shape`, written in batches of `batch` (one transaction each) and read
    /// back in shuffled mini-batches, for each encoding; then the plain-file baseline: the same
    /// fp32 bytes written sequentially (then fsync) and read sequentially.
    public static func run(directory: String, rows: Int = 2000, shape: [Int] = [32, 28, 28], batch: Int = 128) throws -> [Row] {
        let size = shape.reduce(1, *)
        var generator = SeededGenerator(seed: 1)
        let values = UnsafeMutablePointer<Float>.allocate(capacity: batch * size)
        defer { values.deallocate() }
        for i in 0..<(batch * size) { values[i] = Float(generator.nextNormal()) }
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { labels.deallocate() }
        for i in 0..<batch { labels[i] = Int32(i % 10) }
        var result: [Row] = []
        for encoding in FeatureEncoding.allCases {
            let path = directory + "/bench-\(encoding).sqlite"
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
            let store = try FeatureStore(path: path, encoding: encoding)
            let start = now()
            try store.beginLevel(1, split: .train, count: rows, shape: shape)
            var offset = 0
            while offset < rows {
                let n = min(batch, rows - offset)
                try store.write(level: 1, split: .train, offset: offset, rows: n, values: values, labels: labels)
                offset += n
            }
            try store.finishLevel(1, split: .train)
            try store.database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            let written = now() - start
            let source = try store.source(level: 1, split: .train)
            var order = Array(0..<rows)
            order.seededShuffle(using: &generator)
            let readStart = now()
            var position = 0
            while position < rows {
                let n = min(batch, rows - position)
                try source.fill(indices: order[position..<(position + n)], into: values, labels: labels)
                position += n
            }
            let read = now() - readStart
            result.append(Row(name: "store \(encoding.rawValue) (shuffled reads)", bytes: rows * size * encoding.bytesPerValue,
                              writeSeconds: written, readSeconds: read))
        }
        // Plain file, same fp32 bytes.
        let path = directory + "/bench-plain.bin"
        defer { try? FileManager.default.removeItem(atPath: path) }
        FileManager.default.createFile(atPath: path, contents: nil)
        let bytes = rows * size * 4
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        let chunk = Data(bytesNoCopy: values, count: batch * size * 4, deallocator: .none)
        let start = now()
        var written = 0
        while written < bytes {
            let n = min(chunk.count, bytes - written)
            try handle.write(contentsOf: chunk.prefix(n))
            written += n
        }
        try handle.synchronize()
        try handle.close()
        let writeSeconds = now() - start
        let reader = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        let readStart = now()
        while let data = try reader.read(upToCount: chunk.count), !data.isEmpty {}
        let readSeconds = now() - readStart
        try reader.close()
        result.append(Row(name: "plain file fp32 (sequential)", bytes: bytes, writeSeconds: writeSeconds, readSeconds: readSeconds))
        return result
    }
}

import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// The store's memory accounting and the cached levels (FeatureCache): writing, reading, checks.
extension FeatureStore {
    // MARK: memory

    /// Counts SQLite's own memory (page cache, statements) in the ledger's store-engine category.
    func accountEngineMemory() throws {
        guard let ledger else { return }
        try ledger.setExternal(Database.memoryUsed().current, category: .storeEngine, tag: "sqlite")
    }


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
        // Copy the level's pages from the WAL into the database file now rather than at some later
        // automatic checkpoint: what SQLite writes for a module is then counted with that module
        // (``fileBytesWritten``), and the WAL does not grow across modules. A reader holding an old
        // snapshot can keep a passive checkpoint from finishing; the next one completes it.
        try database.execute("PRAGMA wal_checkpoint(PASSIVE)")
        try accountEngineMemory()
    }

    public func dropLevel(_ level: Int, split: Split) throws {}


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
}

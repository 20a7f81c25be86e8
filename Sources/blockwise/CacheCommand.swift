import ArgumentParser
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation

struct StoreOption: ParsableArguments {
    @Option(help: "The run's SQLite store.")
    var store: String = "blockwise.sqlite"
}

struct Cache: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect the feature store (read-only, except vacuum).",
        discussion: """
        Examples:
          blockwise cache ls --store blockwise.sqlite
          blockwise cache stats --level 3
          blockwise cache show --level 1 --sample 0 --png sample.png
          blockwise cache verify
          blockwise cache export --level 2 --format npy --output level2.npy
          blockwise cache vacuum
        """,
        subcommands: [CacheList.self, CacheStats.self, CacheShow.self, CacheVerify.self, CacheExport.self, CacheVacuum.self])
}

func splitArgument(_ text: String) throws -> Split {
    guard let split = Split(rawValue: text) else { throw ValidationError("--split must be train or test (got '\(text)')") }
    return split
}

struct CacheList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "Levels per split (shape, encoding, rows, bytes), modules and the run's configuration.",
                                                    aliases: ["info"])
    @OptionGroup var options: StoreOption
    @Flag(help: "Print the store's description as JSON instead of the table.")
    var json = false
    @Flag(help: "Print the levels table as CSV (exact bytes) instead.")
    var csv = false

    func run() throws {
        let info = try StoreInspector.info(try FeatureStore(readingAt: options.store))
        if json { printJSON(info); return }
        var table = Table([.init("level", width: 7, csv: "level"), .init("split", width: 7, csv: "split"), .init("shape", width: 14, csv: "shape"),
                           .init("encoding", width: 10, csv: "encoding"), .init("rows", width: 8, csv: "rows"),
                           .init("on disk", width: 12, csv: "bytes_on_disk"), .init("complete", width: 0, csv: "complete")])
        for level in info.levels {
            table.append([.int(level.level), .init(level.split), .init(level.shape.map(String.init).joined(separator: "x")), .init(level.encoding),
                          .int(level.rows), .bytes(level.bytesOnDisk), .init(level.complete ? "yes" : "no", value: level.complete ? "true" : "false")])
        }
        if csv { print(table.csv, terminator: ""); return }
        print("store: \(info.path) (\(formatBytes(info.fileBytes)), format version \(info.formatVersion), fingerprint \(info.fingerprint ?? "-"))")
        print(table.text)
        print("modules: " + (info.modules.isEmpty ? "none" : ""))
        for module in info.modules { print("  " + module) }
        print("checkpoints: \(formatBytes(info.checkpointBytes))")
        if let configuration = info.configuration { print("configuration: \(configuration)") }
        if let data = info.data { print("data: \(data)") }
    }
}

struct CacheStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Per-channel mean/std/min/max and the mean squared norm of a level.")
    @OptionGroup var options: StoreOption
    @Option(parsing: .unconditional, help: "Level: 0 = input images, k = outputs of module k.")
    var level: Int
    @Option(help: "train or test.")
    var split: String = "train"

    @Flag(help: "Print the statistics as JSON instead of the table.")
    var json = false
    @Flag(help: "Print the per-channel table as CSV (full precision) instead.")
    var csv = false

    func run() throws {
        let stats = try StoreInspector.statistics(try FeatureStore(readingAt: options.store), level: level, split: try splitArgument(split))
        if json { printJSON(stats); return }
        var table = Table([.init("level", width: 0, csv: "level", inText: false), .init("split", width: 0, csv: "split", inText: false),
                           .init("channel", width: 9, csv: "channel"), .init("mean", width: 12, csv: "mean"), .init("std", width: 12, csv: "std"),
                           .init("min", width: 12, csv: "min"), .init("max", width: 0, csv: "max")])
        for (c, channel) in stats.channels.enumerated() {
            let values: [Double] = [Double(channel.mean), Double(channel.std), Double(channel.min), Double(channel.max)]
            let cells: [Table.Cell] = values.map { value in Table.Cell(String(format: "%.4g", value), value: String(value)) }
            table.append([Table.Cell.int(stats.level), Table.Cell(stats.split), Table.Cell.int(c)] + cells)
        }
        if csv { print(table.csv, terminator: ""); return }
        print("level \(stats.level) \(stats.split): \(stats.rows) samples, mean squared value per element \(String(format: "%.5g", stats.meanSquaredNorm)) (||x||^2 / (C H W), averaged over samples)")
        print(table.text)
    }
}

struct CacheShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A sample's values, or its channels as a grayscale PNG grid.")
    @OptionGroup var options: StoreOption
    @Option(parsing: .unconditional, help: "Level: 0 = input images, k = outputs of module k.")
    var level: Int
    @Option(parsing: .unconditional, help: "Sample index within the split.")
    var sample: Int
    @Option(help: "train or test.")
    var split: String = "train"
    @Option(help: "Write the channels as a PNG grid to this file instead of printing values.")
    var png: String?

    func run() throws {
        let store = try FeatureStore(readingAt: options.store)
        let (values, shape, label) = try StoreInspector.sample(store, level: level, split: try splitArgument(split), index: sample)
        let labelText = StoreInspector.labelName(store, label)
        if let png {
            if StoreFile.isSameFile(png, options.store) { throw ValidationError("--png '\(png)' is the store itself: pass another file name") }
            do { try PNGWriter.channelGrid(values: values, shape: shape, title: "label " + labelText,
                                                 subtitle: "level \(level) \(split) sample \(sample): \(shape[0]) x \(shape[1])x\(shape[2])").write(to: URL(fileURLWithPath: png), options: .atomic) } catch {
                throw OutputFileError(path: png, error: error)
            }
            print("wrote \(png): level \(level) \(split) sample \(sample) (label \(labelText)), \(shape[0]) channel\(shape[0] == 1 ? "" : "s") of \(shape[1])x\(shape[2])")
            return
        }
        print("level \(level) \(split) sample \(sample): label \(labelText), shape \(shape.map(String.init).joined(separator: "x"))")
        let plane = shape[1] * shape[2]
        for c in 0..<shape[0] {
            print("channel \(c):")
            for y in 0..<shape[1] {
                print("  " + (0..<shape[2]).map { String(format: "%7.3f", values[c * plane + y * shape[2] + $0]) }.joined(separator: " "))
            }
        }
    }
}

struct CacheVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the whole store: SQLite's integrity_check, the run record, every level's rows and checksums, every checkpoint tensor, the metrics; exit 1 if anything is damaged.")
    @OptionGroup var options: StoreOption

    func run() throws {
        let report = try StoreVerifier.verify(try FeatureStore(readingAt: options.store))
        let counted = "\(report.checkedRows) feature rows in \(report.levels) levels, \(report.checkpointTensors) checkpoint tensors, "
            + "\(report.modules) module records, \(report.metrics) epoch metrics; SQLite integrity_check \(report.integrityCheck)"
        if report.isClean {
            print("verify: \(options.store): \(counted); every checksum matches, nothing is missing")
            return
        }
        print("verify: this store is damaged (\(options.store)): \(counted)")
        for problem in report.problems.prefix(50) { print("  " + problem) }
        if !report.corrupt.isEmpty { print("  \(report.corrupt.count) feature rows fail their checksum or size:") }
        for row in report.corrupt.prefix(50) { print("    level \(row.level) \(row.split) sample \(row.row)") }
        print("Retrain with 'blockwise train --fresh --store \(options.store)' (the same options) to replace it.")
        throw ExitCode(1)
    }
}

struct CacheExport: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write a level as a NumPy .npy file (float32 [N, C, H, W]) plus its labels.")
    @OptionGroup var options: StoreOption
    @Option(parsing: .unconditional, help: "Level: 0 = input images, k = outputs of module k.")
    var level: Int
    @Option(help: "train or test.")
    var split: String = "train"
    @Option(help: "Export format (npy).")
    var format: String = "npy"
    @Option(help: "Output file (default: level<K>-<split>.npy).")
    var output: String?

    func run() throws {
        guard format == "npy" else { throw ValidationError("--format: only npy is supported (got '\(format)')") }
        let path = output ?? "level\(level)-\(split).npy"
        let (rows, labelsPath) = try StoreInspector.exportNPY(try FeatureStore(readingAt: options.store), level: level,
                                                              split: try splitArgument(split), path: path)
        print("wrote \(path) (\(rows) samples) and \(labelsPath)")
    }
}

struct CacheVacuum: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vacuum", abstract: "Rebuild the store file to reclaim free space (writes).")
    @OptionGroup var options: StoreOption

    func run() throws {
        let (before, after) = try StoreInspector.vacuum(path: options.store)
        print("vacuum: \(formatBytes(before)) -> \(formatBytes(after))")
    }
}

/// Prints a value as pretty JSON with sorted keys (non-finite numbers as "nan"/"inf" strings).
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}

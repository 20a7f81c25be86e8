import BlockwiseData
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation

/// End-to-end throughput of a sequential run (`blockwise bench train --pipeline`): the same
/// configuration once with the features between modules in the SQLite store and once in memory,
/// so the difference is what the store's writes and shuffled reads cost.
public enum PipelineBenchmark {
    public struct Row: Sendable {
        public var name: String
        public var seconds: Double
        /// Training images processed by all modules (samples x epochs summed over modules) per second.
        public var imagesPerSecond: Double
        public var peakBytes: Int
    }

    /// - train, test: the data (the CLI passes a Fashion-MNIST subset).
    /// - directory: where the temporary store goes (deleted afterwards).
    /// - arena, placedWorkspace, workspaceBound: as train's `--arena`, `--placed-workspace`, `--workspace`.
    public static func run(train: Dataset, test: Dataset, width: Int = 16, modules: Int = 3, epochs: Int = 2,
                           arena: ArenaLayout = .default(for: .sequential), placedWorkspace: Bool = false, workspaceBound: Int? = nil,
                           directory: String = NSTemporaryDirectory()) throws -> [Row] {
        var configuration = TrainingConfiguration()
        configuration.model = ModelConfiguration(inputChannels: train.channels, inputHeight: train.height, inputWidth: train.width,
                                                 classes: train.classes, width: width, modules: modules, blocksPerModule: 1,
                                                 encoderDownsamplings: 1, head: .oneCNN)
        configuration.procedure = .sequential
        configuration.setArenaLayout(arena)
        configuration.placedWorkspace = placedWorkspace ? true : nil
        configuration.workspaceBound = workspaceBound
        configuration.epochsBase = epochs
        configuration.seed = 1
        let images = Double(train.count * epochs * modules)
        var rows: [Row] = []
        for inStore in [true, false] {
            let path = (directory as NSString).appendingPathComponent("blockwise-pipeline-\(getpid()).sqlite")
            defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
            var session = TrainingSession(configuration: configuration, train: train, test: test)
            session.storePath = inStore ? path : nil
            session.fresh = true
            let start = DispatchTime.now().uptimeNanoseconds
            let (report, _) = try session.run()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            rows.append(Row(name: inStore ? "sequential, features in the store" : "sequential, features in memory",
                            seconds: seconds, imagesPerSecond: images / seconds, peakBytes: report.peakBytes))
        }
        return rows
    }
}

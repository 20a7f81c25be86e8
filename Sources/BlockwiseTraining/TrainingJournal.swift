import BlockwiseData
import BlockwiseKernels

/// A module's training state at the end of an epoch, enough to continue exactly where it stopped.
public struct EpochCheckpoint: Codable, Sendable {
    public var module: Int
    public var lap: Int
    /// Epochs of this lap already done.
    public var epochsDone: Int
    public var parameters: [String: [Float]]
    public var momentum: [String: [Float]]
    public var transport: TransportWeight
    public var logs: [EpochLog]

    public init(module: Int, lap: Int, epochsDone: Int, parameters: [String: [Float]], momentum: [String: [Float]],
                transport: TransportWeight, logs: [EpochLog]) {
        self.module = module; self.lap = lap; self.epochsDone = epochsDone; self.parameters = parameters
        self.momentum = momentum; self.transport = transport; self.logs = logs
    }
}

/// A finished module: its frozen parameters, its epoch logs and its evaluation.
public struct CompletedModule: Codable, Sendable {
    public var module: Int
    public var lap: Int
    public var parameters: [String: [Float]]
    public var logs: [EpochLog]
    public var evaluation: ModuleEvaluation

    public init(module: Int, lap: Int, parameters: [String: [Float]], logs: [EpochLog], evaluation: ModuleEvaluation) {
        self.module = module; self.lap = lap; self.parameters = parameters; self.logs = logs; self.evaluation = evaluation
    }
}

/// Where a sequential run records its progress so that it can be resumed (the SQLite store).
/// Completed modules are reused, not recomputed; a module interrupted mid-training continues
/// from its last epoch checkpoint.
public protocol TrainingJournal: AnyObject {
    func completedModule(_ module: Int, lap: Int) throws -> CompletedModule?
    /// A completed module's values of `lap` for a frozen forward (`--augmented-inputs recompute`),
    /// counted as storage reads; nil when the journal has none.
    func frozenParameters(module: Int, lap: Int) throws -> [String: [Float]]?
    func epochCheckpoint(_ module: Int, lap: Int) throws -> EpochCheckpoint?
    func saveEpochCheckpoint(_ checkpoint: EpochCheckpoint) throws
    /// Records a module as complete (after its output levels are finished).
    func saveCompletedModule(_ completed: CompletedModule) throws
}

extension FeatureCache {
    /// Level 0 by default: the data sets themselves.
    public func inputSources(train: Dataset, test: Dataset) throws -> (train: SampleSource, test: SampleSource) {
        (DatasetSource(train), DatasetSource(test))
    }
}

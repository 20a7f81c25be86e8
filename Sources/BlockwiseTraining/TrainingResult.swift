import BlockwiseData
import BlockwiseKernels
import Foundation

/// Metrics of one epoch of one module.
public struct EpochLog: Codable, Sendable, Equatable {
    public var module: Int
    public var lap: Int
    public var epoch: Int
    public var taskLoss: Double
    /// Mean over the epoch's batches of the module's kinetic energy (sum over blocks of mean r^2).
    public var kineticEnergy: Double
    /// Accuracy of the module's head on the training batches (train mode, while training).
    public var trainAccuracy: Double
    public var learningRate: Double
    public var transportWeight: Double
    public var samples: Int
    public var seconds: Double
    /// The head's test accuracy after this epoch (`--eval-each-epoch`; running statistics as
    /// trained, before any recalibration); nil otherwise.
    public var testAccuracy: Double? = nil
}

/// A module's head evaluated after training (BN in eval mode).
public struct ModuleEvaluation: Codable, Sendable, Equatable {
    public var module: Int
    public var lap: Int
    public var trainAccuracy: Double?
    public var testAccuracy: Double
    /// Mean kinetic energy (sum over blocks of mean r^2) on the test split.
    public var kineticEnergy: Double
    public var peakBytes: Int
    public var peakBreakdown: MemoryBreakdown
    public var seconds: Double
    public var flops: Int
    /// The work counted by operation class (FLOPs and bytes moved; nil in stores written before
    /// it was counted, whose cost falls back to `flops` at the 3x3 convolution rate).
    public var work: OperationWork? = nil
    /// Feature bytes this module read from / wrote to the store, and storage operations.
    public var storeBytesRead: Int = 0
    public var storeBytesWritten: Int = 0
    public var storeOperations: Int = 0
    /// Bytes SQLite wrote to the file system while the module ran (WAL frames, checkpoints into
    /// the database file, page overhead), measured; nil when not measured (features in memory,
    /// or no per-process I/O counter on this system).
    public var storeFileBytesWritten: Int? = nil
    /// The ledger's timeline while the module trained and streamed (seconds from its start, at
    /// most ~400 points) and the buffers live at its peak; kept in the store with the module so
    /// that a resumed run's report shows every module (nil for the resident procedures).
    public var timeline: [LedgerEvent]? = nil
    public var peakTensors: [LiveTensor]? = nil
}

/// What a run produced.
public struct TrainingResult: Codable, Sendable {
    public var configuration: TrainingConfiguration
    public var epochs: [EpochLog] = []
    /// The final evaluation of each module (the last lap's, for multilap).
    public var modules: [ModuleEvaluation] = []
    public var peakBytes: Int = 0
    public var peakBreakdown = MemoryBreakdown()
    public var seconds: Double = 0

    /// The module whose head has the best test accuracy.
    public var best: ModuleEvaluation? { modules.max { $0.testAccuracy < $1.testAccuracy } }
    public var last: ModuleEvaluation? { modules.last }
}

/// Progress of a run, for the CLI's progress line.
public enum TrainingEvent {
    case moduleStarted(module: Int, lap: Int, epochs: Int, plan: [SlotSpec])
    case batch(module: Int, lap: Int, epoch: Int, batch: Int, batches: Int, metrics: StepMetrics, samplesPerSecond: Double)
    case epochFinished(EpochLog)
    case moduleEvaluated(ModuleEvaluation)
    /// A completed module found in the store: reused, not recomputed.
    case moduleResumed(module: Int, lap: Int)
    /// A module continued from its checkpoint after `epoch` epochs.
    case moduleResumedAtEpoch(module: Int, lap: Int, epoch: Int)
}

public enum TrainingError: Error, CustomStringConvertible {
    case invalidConfiguration([String])
    case ledgerNotAtBaseline(module: Int, live: MemoryBreakdown)
    /// A saved module state (resume) lacks tensors or holds them with the wrong size.
    case incompleteCheckpoint(module: Int, what: String, problems: [String])
    /// An epoch's loss or kinetic energy is not finite.
    case diverged(module: Int, lap: Int, epoch: Int, loss: Double, kinetic: Double, learningRate: Double)
    /// A cached level does not hold one row per sample of the run's data.
    case levelRowCount(level: Int, split: String, rows: Int, samples: Int)

    /// What is damaged, for the errors that mean the journal (store) is damaged; nil otherwise.
    public var damage: String? {
        switch self {
        case .incompleteCheckpoint(let module, let what, let problems):
            return "the \(what) of module \(module + 1) is incomplete (\(problems.prefix(5).joined(separator: "; "))"
                + (problems.count > 5 ? "; and \(problems.count - 5) more" : "") + ")"
        case .levelRowCount(let level, let split, let rows, let samples):
            return "level \(level) \(split) holds \(rows) rows but the run needs \(samples) (one per \(split) sample, or per view with --augmented-inputs pool=N)"
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .invalidConfiguration(let problems): return "invalid configuration: " + problems.joined(separator: "; ")
        case .ledgerNotAtBaseline(let module, let live):
            return "internal error: after module \(module) the ledger still holds \(live)"
        case .diverged(let module, let lap, let epoch, let loss, let kinetic, let learningRate):
            return "module \(module + 1)\(lap > 0 ? " lap \(lap + 1)" : "") diverged in epoch \(epoch + 1) (loss \(loss), kinetic energy \(kinetic)): "
                + "lower --lr (\(learningRate) now), or raise --tau; its last good epoch stays checkpointed in the store."
        case .incompleteCheckpoint, .levelRowCount:
            return "the store is damaged: \(damage!). Run blockwise cache verify; --fresh starts over."
        }
    }
}

/// Samples whose largest logit is at their label.
public func countCorrect(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, classes: Int) -> Int {
    var correct = 0
    for n in 0..<batch {
        let row = logits + n * classes
        var best = 0
        for c in 1..<classes where row[c] > row[best] { best = c }
        if best == Int(labels[n]) { correct += 1 }
    }
    return correct
}

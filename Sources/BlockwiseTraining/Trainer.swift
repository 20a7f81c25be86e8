import BlockwiseData
import BlockwiseKernels
import Foundation

/// Runs the four procedures. Pure of I/O except through ``SampleSource`` and ``FeatureCache``.
public final class Trainer {
    public let configuration: TrainingConfiguration
    public let ledger: MemoryLedger
    public let cache: FeatureCache
    public var observer: ((TrainingEvent) throws -> Void)?
    /// Records progress for resuming (sequential and multilap only); nil: nothing is recorded.
    public var journal: TrainingJournal?
    /// Parameter values of each module after its last training (for multilap and checkpoints).
    public internal(set) var snapshots: [Int: [String: [Float]]] = [:]
    /// The phases this trainer executes: residency, (micro-)batches, buffers, convolution engines.
    public let plan: ExecutionPlan
    /// Where `--page` puts activations (and weights): the run's store. Required when the
    /// configuration pages; it should also be the `cache`, whose counters then count the pages.
    public var pager: TensorPager?

    /// - plan: the phases to execute, made from `configuration` (its micro-batches resolved);
    ///   nil: ``ExecutionPlan/init(_:)`` of `configuration`.
    public init(configuration: TrainingConfiguration, ledger: MemoryLedger, cache: FeatureCache? = nil, plan: ExecutionPlan? = nil) throws {
        let problems = configuration.problems()
        guard problems.isEmpty else { throw TrainingError.invalidConfiguration(problems) }
        let plan = plan ?? ExecutionPlan(configuration)
        precondition(plan.procedure == configuration.procedure
                     && (plan.keepsAllModulesResident ? plan.resident.count : plan.modules.count) == configuration.model.modules,
                     "the execution plan is not the configuration's")
        self.plan = plan
        self.configuration = configuration
        self.ledger = ledger
        self.cache = cache ?? InMemoryFeatureCache(ledger: ledger)
    }

    /// Trains on `train`, evaluates every head on `test`.
    public func run(train: Dataset, test: Dataset) throws -> TrainingResult {
        let start = DispatchTime.now().uptimeNanoseconds
        ledger.resetPeak()
        var result: TrainingResult
        if plan.technique != nil {
            if plan.technique!.pages && pager == nil { throw TrainingError.invalidConfiguration(["--page needs the store (--store FILE)"]) }
            result = try runEndToEndSaving(train: DatasetSource(train), test: DatasetSource(test))
        } else if plan.keepsAllModulesResident {
            result = try runResident(train: DatasetSource(train), test: DatasetSource(test), endToEnd: configuration.procedure == .e2e)
        } else {
            result = try runSequential(train: train, test: test)
        }
        result.peakBytes = ledger.highWater
        result.peakBreakdown = ledger.highWaterBreakdown
        // Modules reused from a store report the peaks measured when they were trained.
        if let top = result.modules.max(by: { $0.peakBytes < $1.peakBytes }), top.peakBytes > result.peakBytes {
            result.peakBytes = top.peakBytes
            result.peakBreakdown = top.peakBreakdown
        }
        result.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return result
    }

    var modelConfig: ModelConfiguration { configuration.model }

    /// Mini-batches of a shuffled epoch; a last batch of one sample is dropped (batch norm needs two).
    func batches(count: Int, generator: inout SeededGenerator) -> [ArraySlice<Int>] {
        var order = Array(0..<count)
        order.seededShuffle(using: &generator)
        var start = 0
        return BatchSchedule.trainingBatches(count: count, batchSize: configuration.batchSize).map { size in
            defer { start += configuration.batchSize }
            return order[start..<(start + size)]
        }
    }
}

import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// Where the features between modules live, as far as memory is concerned.
public enum FeatureResidence: Equatable, Sendable, Codable {
    /// In the SQLite store, in `encoding`: one encoded row buffer (``RunPlanner/rowBufferFloats(_:encoding:)``)
    /// and SQLite's own memory, bounded by its page cache (`cacheBytes`) plus a fixed overhead for
    /// schema and statements.
    case store(encoding: FeatureEncoding, cacheBytes: Int)
    /// In ledger-counted memory: the input and output levels of the module, both splits.
    case memory
    /// Not cached (parallel, e2e: all modules resident).
    case none
}

/// The predicted memory of one module (its training phase and its feature-streaming phase).
public struct ModuleMemoryPlan: Codable, Sendable {
    public var module: Int
    public var batch: Int
    /// What the trainer allocates (everything but the SQLite engine), at the moment of the peak.
    public var breakdown: MemoryBreakdown
    /// The two phases: training (module + optimizer + batch) and streaming the frozen module's
    /// outputs (module in eval mode); `breakdown` is the larger.
    public var trainingPhase: MemoryBreakdown
    public var streamingPhase: MemoryBreakdown
    /// Upper bound of SQLite's own memory (store-engine category).
    public var storeEngineBound: Int
    public var peakBytes: Int { breakdown.total + storeEngineBound }
    /// What the module performs in one lap (FLOPs exactly as the kernels count them; storage
    /// traffic through the store), at `batch`.
    public var work: ModuleWork
    /// How each convolution runs in training at `batch` (engine and chunk; the selected engine).
    public var convolutions: [ConvolutionChoice]
}

/// What a module's lap performs, counted as the runtime counts it (see ``RunPlanner/moduleWork``).
public struct ModuleWork: Codable, Sendable, Equatable {
    /// Training epochs (forward, loss, backward, optimizer steps), the batch-norm recalibration
    /// pass, and streaming both splits through the frozen module.
    public var trainingFlops: Int
    public var recalibrationFlops: Int
    public var streamingFlops: Int
    public var flops: Int { trainingFlops + recalibrationFlops + streamingFlops }
    /// Feature bytes read from and written to the store, and storage operations (zero in memory).
    public var storeBytesRead = 0
    public var storeBytesWritten = 0
    public var storeOperations = 0
}

/// Plans a run without allocating: per-module peaks by category, the largest batch that fits a
/// budget, the store's size per level and encoding, and the emulated device's time and energy.
public enum RunPlanner {
    /// Fixed SQLite overhead beyond the page cache (schema, prepared statements, connection),
    /// measured with `sqlite3_status64` on this schema at 24-30 KiB with 16-64 KiB caches
    /// (lookaside and the initial bulk page allocation are turned off); bounded at 40 KiB.
    public static let storeEngineOverhead = 40 * 1024

    /// Upper bound of SQLite's memory for a page cache of `cacheBytes`: pages carry ~5% of
    /// headers (bounded at 8%) plus the fixed overhead.
    public static func storeEngineBound(cacheBytes: Int) -> Int {
        cacheBytes + (cacheBytes * 8 + 99) / 100 + storeEngineOverhead
    }

    /// The store's row buffer for a run: the largest encoded row of any level.
    public static func rowBufferFloats(_ configuration: TrainingConfiguration, encoding: FeatureEncoding) -> Int {
        let model = configuration.model
        let shapes = [model.moduleInputShape(0)] + (0..<model.modules).map { model.moduleOutputShape($0) }
        return shapes.map { encoding.rowBufferFloats(shape: $0) }.max() ?? 0
    }

    /// The memory plan of module k at `batch` (sequential / multilap).
    public static func modulePlan(_ configuration: TrainingConfiguration, module k: Int, batch: Int,
                                  residence: FeatureResidence, trainCount: Int, testCount: Int) -> ModuleMemoryPlan {
        let model = configuration.model
        let training = ExecutionPlan.trainingPhase(configuration, module: k, batch: batch)
        var trainingPhase = training.breakdown
        var streamingPhase = ExecutionPlan.streamingPhase(configuration, module: k, batch: batch).breakdown
        var engine = 0
        switch residence {
        case .store(let encoding, let cacheBytes):
            let rowBufferBytes = rowBufferFloats(configuration, encoding: encoding) * 4
            trainingPhase[.ioBuffers] += rowBufferBytes
            streamingPhase[.ioBuffers] += rowBufferBytes
            engine = storeEngineBound(cacheBytes: cacheBytes)
        case .memory:
            let samples = trainCount + testCount
            let input = k == 0 ? 0 : samples * model.moduleInputShape(k).reduce(1, *) * 4
            let output = samples * model.moduleOutputShape(k).reduce(1, *) * 4
            trainingPhase[.ioBuffers] += input
            streamingPhase[.ioBuffers] += input + output
        case .none:
            break
        }
        let breakdown = trainingPhase.total >= streamingPhase.total ? trainingPhase : streamingPhase
        let work = moduleWork(configuration, module: k, capacity: batch, residence: residence, trainCount: trainCount, testCount: testCount)
        return ModuleMemoryPlan(module: k, batch: batch, breakdown: breakdown, trainingPhase: trainingPhase,
                                streamingPhase: streamingPhase, storeEngineBound: engine, work: work,
                                convolutions: training.convolutions)
    }

    /// The smallest (micro-)batch we train with: batch norm needs at least two samples to have
    /// a variance (at one, the 1cnn head's BatchNorm1d outputs a constant and passes no gradient).
    public static let minimumBatch = TrainingConfiguration.minimumBatchSize

    /// The largest batch (<= requested, >= ``minimumBatch`` unless the requested batch is smaller)
    /// whose module plan fits `budget`, or nil if none does.
    public static func largestBatch(_ configuration: TrainingConfiguration, module k: Int, budget: Int,
                                    residence: FeatureResidence, trainCount: Int, testCount: Int) -> Int? {
        func fits(_ batch: Int) -> Bool {
            modulePlan(configuration, module: k, batch: batch, residence: residence, trainCount: trainCount, testCount: testCount).peakBytes <= budget
        }
        let smallest = min(minimumBatch, configuration.batchSize)
        guard fits(smallest) else { return nil }
        var low = smallest, high = configuration.batchSize
        if fits(high) { return high }
        while high - low > 1 {
            let middle = (low + high) / 2
            if fits(middle) { low = middle } else { high = middle }
        }
        return low
    }

    /// What module k performs in one lap at a (micro-)batch of `capacity`, counted the way the
    /// runtime counts it: the kernels' FLOPs over the batches ``BatchSchedule`` gives the trainer
    /// (training epochs with their optimizer steps, the batch-norm recalibration pass, streaming
    /// both splits), and, through the store, the feature bytes read and written and the storage
    /// operations (one per row read, one per batch written).
    public static func moduleWork(_ configuration: TrainingConfiguration, module k: Int, capacity: Int, residence: FeatureResidence,
                                  trainCount: Int, testCount: Int) -> ModuleWork {
        let model = configuration.model
        let epochs = configuration.epochsPerLap(module: k)
        let batches = BatchSchedule.trainingBatches(count: trainCount, batchSize: configuration.batchSize)
        let optimizer = FlopCount.optimizerStep(parameters: ResNetModule.trainableCount(configuration: model, index: k))
        let epochFlops = batches.reduce(0) { sum, batch in
            sum + optimizer + BatchSchedule.microBatches(batch, capacity: capacity).reduce(0) {
                $0 + ResNetModule.trainStepFlops(configuration: model, index: k, batch: $1)
            }
        }
        let recalibration = configuration.recalibrateBatchNorm
            ? BatchSchedule.recalibrationBatches(count: trainCount, size: min(configuration.batchSize, capacity)) : []
        let recalibrationFlops = recalibration.reduce(0) { $0 + ResNetModule.forwardFlops(configuration: model, index: k, batch: $1, training: true) }
        let streamed = BatchSchedule.sequentialBatches(count: trainCount, size: capacity) + BatchSchedule.sequentialBatches(count: testCount, size: capacity)
        let streamingFlops = streamed.reduce(0) { $0 + ResNetModule.forwardFlops(configuration: model, index: k, batch: $1, training: false) }
        var work = ModuleWork(trainingFlops: epochs * epochFlops, recalibrationFlops: recalibrationFlops, streamingFlops: streamingFlops)
        if case .store(let encoding, _) = residence {
            let rowsRead = epochs * batches.reduce(0, +) + recalibration.reduce(0, +) + trainCount + testCount
            work.storeBytesRead = rowsRead * model.moduleInputShape(k).reduce(1, *) * encoding.bytesPerValue
            work.storeBytesWritten = (trainCount + testCount) * model.moduleOutputShape(k).reduce(1, *) * encoding.bytesPerValue
            work.storeOperations = rowsRead + streamed.count
        }
        return work
    }

    /// What the resident procedures (parallel, e2e) perform in the whole run, counted as the
    /// runtime counts it: every module's steps each epoch, the recalibration pass and the test
    /// evaluation through the chained modules.
    public static func residentFlops(_ configuration: TrainingConfiguration, trainCount: Int, testCount: Int) -> Int {
        let model = configuration.model, count = model.modules
        let endToEnd = configuration.procedure == .e2e
        let phases = ExecutionPlan.residentPhases(configuration)
        let hasHead = { (k: Int) in phases[k].hasHead }
        let optimizer = (0..<count).reduce(0) { $0 + FlopCount.optimizerStep(parameters: ResNetModule.trainableCount(configuration: model, index: $1, hasHead: hasHead($1))) }
        func chain(batch: Int, training: Bool) -> Int {
            (0..<count).reduce(0) { $0 + ResNetModule.forwardFlops(configuration: model, index: $1, hasHead: hasHead($1), batch: batch, training: training) }
        }
        func step(batch n: Int) -> Int {
            if endToEnd {
                return chain(batch: n, training: true) + ResNetModule.headLossFlops(configuration: model, index: count - 1, batch: n)
                    + (0..<count).reduce(0) { $0 + ResNetModule.backwardFlops(configuration: model, index: $1, batch: n, inputGradient: $1 > 0) }
            }
            return (0..<count).reduce(0) { $0 + ResNetModule.trainStepFlops(configuration: model, index: $1, batch: n) }
        }
        let epoch = BatchSchedule.trainingBatches(count: trainCount, batchSize: configuration.batchSize).reduce(0) { $0 + step(batch: $1) + optimizer }
        let recalibration = configuration.recalibrateBatchNorm
            ? BatchSchedule.recalibrationBatches(count: trainCount, size: configuration.batchSize).reduce(0) { $0 + chain(batch: $1, training: true) } : 0
        let evaluation = BatchSchedule.sequentialBatches(count: testCount, size: configuration.batchSize).reduce(0) { $0 + chain(batch: $1, training: false) }
        return configuration.residentEpochs * epoch + recalibration + evaluation
    }

    /// Store bytes of one level (both splits) for an encoding.
    public static func levelBytes(shape: [Int], samples: Int, encoding: FeatureEncoding) -> Int {
        samples * shape.reduce(1, *) * encoding.bytesPerValue
    }
}

/// Thrown before training a module that cannot fit its budget (`--fit error`).
public struct ModuleDoesNotFitError: Error, CustomStringConvertible {
    public var module: Int
    public var batch: Int
    public var needed: MemoryBreakdown
    public var storeEngineBound: Int
    public var budget: Int
    public var largestBatch: Int?

    public var description: String {
        var text = "module \(module + 1) does not fit: at batch \(batch) it needs \(formatBytes(needed.total + storeEngineBound)) "
            + "(\(needed.description)\(storeEngineBound > 0 ? ", storeEngine up to \(formatBytes(storeEngineBound))" : "")) "
            + "but the budget is \(formatBytes(budget)). "
        if let largestBatch {
            text += "The largest batch that fits is \(largestBatch): pass --batch-size \(largestBatch), or --fit microbatch to keep batch \(batch) by accumulating micro-batches of \(largestBatch)."
        } else {
            text += "Not even a batch of \(min(RunPlanner.minimumBatch, batch)) fits (what would change that follows)."
        }
        return text
    }
}

import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// Where the features between modules live, as far as memory is concerned.
public enum FeatureResidence: Equatable, Sendable, Codable {
    /// In the SQLite store: one encoded row buffer of `rowBufferBytes` and SQLite's own memory,
    /// bounded by its page cache (`cacheBytes`) plus a fixed overhead for schema and statements.
    case store(rowBufferBytes: Int, cacheBytes: Int)
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
    /// Floating-point operations of one training epoch and of streaming both splits (estimate:
    /// convolutions, linear layers, batch norm and the SGD step).
    public var trainingFlopsPerEpoch: Int
    public var streamingFlops: Int
    public var epochs: Int
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
        let training = ModuleMemoryOptions(batch: batch, training: true, workspaceBound: configuration.workspaceBound)
        let evaluation = ModuleMemoryOptions(batch: batch, training: false, workspaceBound: configuration.workspaceBound)
        var trainingPhase = ResNetModule.memoryPlan(configuration: model, index: k, training).breakdown
        var streamingPhase = ResNetModule.memoryPlan(configuration: model, index: k, evaluation).breakdown
        var engine = 0
        switch residence {
        case .store(let rowBufferBytes, let cacheBytes):
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
        let flops = flopsPerSample(model, module: k)
        let parameters = ResNetModule.parameterSpecs(configuration: model, index: k).filter(\.isTrainable)
            .reduce(0) { $0 + $1.shape.reduce(1, *) }
        let steps = (trainCount + configuration.batchSize - 1) / configuration.batchSize
        let epochFlops = trainCount * flops.training + steps * 6 * parameters
        let recalibration = configuration.recalibrateBatchNorm ? trainCount * flops.forward : 0
        return ModuleMemoryPlan(module: k, batch: batch, breakdown: breakdown, trainingPhase: trainingPhase,
                                streamingPhase: streamingPhase, storeEngineBound: engine,
                                trainingFlopsPerEpoch: epochFlops,
                                streamingFlops: (trainCount + testCount) * flops.forward + recalibration,
                                epochs: configuration.epochs(module: k))
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

    /// Per-sample FLOPs of module k: forward only, and one training step (forward + backward).
    public static func flopsPerSample(_ model: ModelConfiguration, module k: Int) -> (forward: Int, training: Int) {
        var forward = 0, backward = 0
        var shape = model.moduleInputShape(k)
        func conv(_ g: Conv2dGeometry, needsInputGradient: Bool) {
            let f = g.forwardFlops(batch: 1)
            forward += f
            backward += f * (needsInputGradient ? 2 : 1)
            let elements = g.outputChannels * g.outputPixels
            forward += 8 * elements      // batch norm
            backward += 10 * elements
        }
        if k == 0 {
            var g = Conv2dGeometry(inputChannels: model.inputChannels, outputChannels: model.width, kernelSize: 3,
                                   inputHeight: model.inputHeight, inputWidth: model.inputWidth)
            conv(g, needsInputGradient: false)
            shape = [model.width, g.outputHeight, g.outputWidth]
            for _ in 0..<model.encoderDownsamplings {
                g = Conv2dGeometry(inputChannels: model.width, outputChannels: model.width, kernelSize: 3, stride: 2,
                                   inputHeight: shape[1], inputWidth: shape[2])
                conv(g, needsInputGradient: true)
                shape = [model.width, g.outputHeight, g.outputWidth]
            }
        }
        for b in 0..<model.blocksPerModule {
            let downsample = b == 0 && model.downsampleAt.contains(k)
            let channels = downsample ? shape[0] * 2 : shape[0]
            let g1 = Conv2dGeometry(inputChannels: shape[0], outputChannels: channels, kernelSize: 3, stride: downsample ? 2 : 1,
                                    inputHeight: shape[1], inputWidth: shape[2])
            conv(g1, needsInputGradient: !(b == 0 && k > 0) || k == 0)
            let g2 = Conv2dGeometry(inputChannels: channels, outputChannels: channels, kernelSize: 3,
                                    inputHeight: g1.outputHeight, inputWidth: g1.outputWidth)
            conv(g2, needsInputGradient: true)
            shape = [channels, g2.outputHeight, g2.outputWidth]
            forward += 2 * shape.reduce(1, *)  // transport term
        }
        let c = shape[0], spatial = shape[1] * shape[2]
        if model.head == .oneCNN {
            let g = Conv2dGeometry(inputChannels: c, outputChannels: c, kernelSize: 3, inputHeight: shape[1], inputWidth: shape[2])
            forward += g.forwardFlops(batch: 1)
            backward += 2 * g.forwardFlops(batch: 1)
            forward += 8 * c
            backward += 10 * c
        }
        forward += 2 * c * model.classes + 6 * model.classes
        backward += 4 * c * model.classes
        _ = spatial
        return (forward, forward + backward)
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

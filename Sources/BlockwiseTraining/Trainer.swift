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
    /// Feature bytes this module read from / wrote to the store, and storage operations.
    public var storeBytesRead: Int = 0
    public var storeBytesWritten: Int = 0
    public var storeOperations: Int = 0
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
            return "level \(level) \(split) holds \(rows) rows but the run has \(samples) \(split) samples"
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

/// Runs the four procedures. Pure of I/O except through ``SampleSource`` and ``FeatureCache``.
public final class Trainer {
    public let configuration: TrainingConfiguration
    public let ledger: MemoryLedger
    public let cache: FeatureCache
    public var observer: ((TrainingEvent) throws -> Void)?
    /// Records progress for resuming (sequential and multilap only); nil: nothing is recorded.
    public var journal: TrainingJournal?
    /// Parameter values of each module after its last training (for multilap and checkpoints).
    public private(set) var snapshots: [Int: [String: [Float]]] = [:]

    public init(configuration: TrainingConfiguration, ledger: MemoryLedger, cache: FeatureCache? = nil) throws {
        let problems = configuration.problems()
        guard problems.isEmpty else { throw TrainingError.invalidConfiguration(problems) }
        self.configuration = configuration
        self.ledger = ledger
        self.cache = cache ?? InMemoryFeatureCache(ledger: ledger)
    }

    /// Trains on `train`, evaluates every head on `test`.
    public func run(train: Dataset, test: Dataset) throws -> TrainingResult {
        let start = DispatchTime.now().uptimeNanoseconds
        ledger.resetPeak()
        var result: TrainingResult
        switch configuration.procedure {
        case .sequential, .multilap: result = try runSequential(train: train, test: test)
        case .parallel: result = try runResident(train: DatasetSource(train), test: DatasetSource(test), endToEnd: false)
        case .e2e: result = try runResident(train: DatasetSource(train), test: DatasetSource(test), endToEnd: true)
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

    func trainingOptions(module k: Int? = nil, ownsInput: Bool = true, needsInputGradient: Bool = false) -> ModuleMemoryOptions {
        ModuleMemoryOptions(batch: k.map { configuration.microBatch(module: $0) } ?? configuration.batchSize,
                            training: true, workspaceBound: configuration.workspaceBound,
                            ownsInputBuffer: ownsInput, needsInputGradient: needsInputGradient)
    }

    /// Streaming and evaluation run at the module's (micro-)batch, so they fit wherever training did.
    func evaluationOptions(module k: Int) -> ModuleMemoryOptions {
        ModuleMemoryOptions(batch: configuration.microBatch(module: k), training: false, workspaceBound: configuration.workspaceBound)
    }

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

    // MARK: sequential and multi-lap

    func runSequential(train: Dataset, test: Dataset) throws -> TrainingResult {
        var result = TrainingResult(configuration: configuration)
        let modules = modelConfig.modules
        let inputs = try cache.inputSources(train: train, test: test)
        for lap in 0..<configuration.lapCount {
            for k in 0..<modules {
                if let done = try journal?.completedModule(k, lap: lap) {
                    // Reused, not recomputed: its levels are complete in the store (the next
                    // module's read checks them); its saved parameters must be whole.
                    let problems = ParameterStore.problems(loading: done.parameters,
                                                           specs: ResNetModule.parameterSpecs(configuration: modelConfig, index: k))
                    guard problems.isEmpty else {
                        throw TrainingError.incompleteCheckpoint(module: k, what: "completed-module parameters", problems: problems)
                    }
                    snapshots[k] = done.parameters
                    result.epochs += done.logs
                    try observer?(.moduleResumed(module: k, lap: lap))
                    try observer?(.moduleEvaluated(done.evaluation))
                    if lap == configuration.lapCount - 1 { result.modules.append(done.evaluation) }
                    continue
                }
                // The input level is opened only when the module trains: on resume, a later lap
                // may have left a reused module's output level half rewritten.
                let trainSource = k == 0 ? inputs.train : try cache.source(level: k, split: .train)
                let testSource = k == 0 ? inputs.test : try cache.source(level: k, split: .test)
                for (source, split, samples) in [(trainSource, "train", train.count), (testSource, "test", test.count)] where source.count != samples {
                    throw TrainingError.levelRowCount(level: k, split: split, rows: source.count, samples: samples)
                }
                let baseline = ledger.live
                let moduleStart = DispatchTime.now().uptimeNanoseconds
                let flopsStart = KernelCounters.flops
                let io = (cache.bytesRead, cache.bytesWritten, cache.operations)
                ledger.resetPeak()
                let firstEvent = ledger.eventCount, moduleClock = ledger.elapsedSeconds
                ledger.mark(configuration.lapCount > 1 ? "module \(k + 1) lap \(lap + 1)" : "module \(k + 1)")
                var evaluation: ModuleEvaluation
                var logs: [EpochLog]
                do {
                    let module = try ResNetModule(configuration: modelConfig, index: k, ledger: ledger)
                    if let snapshot = snapshots[k] {
                        try module.parameters.loadChecked(snapshot, module: k, what: "parameters")
                    } else if lap > 0, let previous = try journal?.completedModule(k, lap: lap - 1) {
                        try module.parameters.loadChecked(previous.parameters, module: k, what: "lap \(lap) checkpoint")
                    } else {
                        Initialization.initialize(module.parameters, gain: modelConfig.initGain, seed: configuration.seed, module: k)
                    }
                    let options = trainingOptions(module: k)
                    try module.prepare(options)
                    try observer?(.moduleStarted(module: k, lap: lap, epochs: configuration.epochsPerLap(module: k),
                                             plan: module.memoryPlan(options)))
                    logs = try trainModule(module, source: trainSource, lap: lap)
                    if configuration.recalibrateBatchNorm { try recalibrate([module], source: trainSource) }
                    let parameters = module.parameters.snapshot()
                    snapshots[k] = parameters
                    try module.prepare(evaluationOptions(module: k))
                    ledger.mark("module \(k + 1) streams level \(k + 1)")
                    let level = k + 1
                    let trainEval = try stream(module, source: trainSource, level: level, split: .train)
                    let testEval = try stream(module, source: testSource, level: level, split: .test)
                    evaluation = ModuleEvaluation(module: k, lap: lap, trainAccuracy: trainEval.accuracy,
                                                  testAccuracy: testEval.accuracy, kineticEnergy: testEval.kinetic,
                                                  peakBytes: 0, peakBreakdown: MemoryBreakdown(), seconds: 0, flops: 0)
                    module.release()
                }
                // The module is gone: every category but the cached levels (I/O) and the store
                // engine is back to what it was before the module was loaded.
                for category in MemoryCategory.allCases where category != .ioBuffers && category != .storeEngine {
                    if ledger.live[category] != baseline[category] {
                        throw TrainingError.ledgerNotAtBaseline(module: k, live: ledger.live)
                    }
                }
                evaluation.peakBytes = ledger.peak
                evaluation.peakBreakdown = ledger.peakBreakdown
                evaluation.seconds = Double(DispatchTime.now().uptimeNanoseconds - moduleStart) / 1e9
                evaluation.flops = KernelCounters.flops - flopsStart
                evaluation.storeBytesRead = cache.bytesRead - io.0
                evaluation.storeBytesWritten = cache.bytesWritten - io.1
                evaluation.storeOperations = cache.operations - io.2
                evaluation.timeline = MemoryLedger.downsample(ledger.timeline.filter { $0.sequence > firstEvent }.map {
                    var event = $0; event.seconds = ($0.seconds ?? moduleClock) - moduleClock; return event
                }, to: 400)
                evaluation.peakTensors = ledger.peakTensors
                try journal?.saveCompletedModule(CompletedModule(module: k, lap: lap, parameters: snapshots[k]!,
                                                                 logs: logs, evaluation: evaluation))
                if k > 0 && !cache.keepsLevels {
                    try cache.dropLevel(k, split: .train)
                    try cache.dropLevel(k, split: .test)
                }
                result.epochs += logs
                try observer?(.moduleEvaluated(evaluation))
                if lap == configuration.lapCount - 1 { result.modules.append(evaluation) }
            }
            if !cache.keepsLevels {
                try cache.dropLevel(modules, split: .train)
                try cache.dropLevel(modules, split: .test)
            }
        }
        return result
    }

    /// A diverged epoch (a loss or kinetic energy that is NaN or infinite) stops the run before
    /// it is checkpointed: nothing after it would mean anything.
    func checkFinite(_ log: EpochLog) throws {
        guard log.taskLoss.isFinite, log.kineticEnergy.isFinite else {
            throw TrainingError.diverged(module: log.module, lap: log.lap, epoch: log.epoch, loss: log.taskLoss,
                                         kinetic: log.kineticEnergy, learningRate: configuration.optimizer.learningRate)
        }
    }

    /// Trains one module for its epochs of this lap on `source`, continuing from the journal's
    /// epoch checkpoint when there is one. Each epoch's shuffle has its own seeded stream, so a
    /// resumed module sees exactly the batches an uninterrupted one would.
    func trainModule(_ module: ResNetModule, source: SampleSource, lap: Int) throws -> [EpochLog] {
        let k = module.index
        let epochs = configuration.epochsPerLap(module: k)
        let totalEpochs = configuration.procedure == .multilap ? epochs * configuration.laps : epochs
        var transport = TransportWeight(schedule: configuration.tau, module: k, modules: modelConfig.modules)
        var logs: [EpochLog] = []
        var firstEpoch = 0
        if let checkpoint = try journal?.epochCheckpoint(k, lap: lap) {
            try module.parameters.loadChecked(checkpoint.parameters, module: k, what: "epoch \(checkpoint.epochsDone) checkpoint")
            try module.parameters.loadMomentumChecked(checkpoint.momentum, module: k, what: "epoch \(checkpoint.epochsDone) checkpoint")
            transport = checkpoint.transport
            logs = checkpoint.logs
            firstEpoch = checkpoint.epochsDone
            try observer?(.moduleResumedAtEpoch(module: k, lap: lap, epoch: firstEpoch))
        }
        for epoch in firstEpoch..<epochs {
            var generator = SeededGenerator.stream(seed: configuration.seed, "shuffle-m\(k)-lap\(lap)-epoch\(epoch)")
            let globalEpoch = lap * epochs + epoch
            let rate = configuration.schedule.rate(base: configuration.optimizer.learningRate, epoch: globalEpoch, epochs: totalEpochs)
            let start = DispatchTime.now().uptimeNanoseconds
            var sum = StepMetrics()
            var batchCount = 0
            let plan = batches(count: source.count, generator: &generator)
            let micro = module.batchCapacity
            for (b, indices) in plan.enumerated() {
                module.parameters.zeroGradients()
                let weight = configuration.tau.isOff ? 0 : Float(transport.weight)
                // Micro-batches (one when they fit): gradients accumulate, each scaled by its share
                // of the mini-batch, so the step equals one over the whole mini-batch (but for BN).
                var metrics = StepMetrics()
                // Near-equal chunks of at most `micro` samples (never a lone sample while a split
                // into chunks of two or more exists: batch norm needs two).
                var first = indices.startIndex
                for size in BatchSchedule.microBatches(indices.count, capacity: micro) {
                    let chunk = indices[first..<(first + size)]
                    try source.fill(indices: chunk, into: module.inputBuffer, labels: module.labelsBuffer)
                    let share = Float(chunk.count) / Float(indices.count)
                    let part = module.trainStep(input: module.inputBuffer, labels: module.labelsBuffer, batch: chunk.count,
                                                transportWeight: weight, labelSmoothing: configuration.labelSmoothing, scale: share)
                    metrics.taskLoss += part.taskLoss * Double(share)
                    metrics.kineticEnergy += part.kineticEnergy * Double(share)
                    metrics.totalLoss += part.totalLoss * Double(share)
                    metrics.correct += part.correct
                    metrics.samples += part.samples
                    first = chunk.endIndex
                }
                configuration.optimizer.step(module.parameters, rate: rate)
                transport.record(taskLoss: metrics.taskLoss)
                sum.taskLoss += metrics.taskLoss
                sum.kineticEnergy += metrics.kineticEnergy
                sum.correct += metrics.correct
                sum.samples += metrics.samples
                batchCount += 1
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                try observer?(.batch(module: k, lap: lap, epoch: epoch, batch: b + 1, batches: plan.count, metrics: metrics,
                                 samplesPerSecond: Double(sum.samples) / max(elapsed, 1e-9)))
            }
            let log = EpochLog(module: k, lap: lap, epoch: epoch, taskLoss: sum.taskLoss / Double(max(batchCount, 1)),
                               kineticEnergy: sum.kineticEnergy / Double(max(batchCount, 1)),
                               trainAccuracy: Double(sum.correct) / Double(max(sum.samples, 1)), learningRate: rate,
                               transportWeight: configuration.tau.isOff ? 0 : transport.weight, samples: sum.samples,
                               seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            try checkFinite(log)
            logs.append(log)
            if let journal {
                var momentum: [String: [Float]] = [:]
                for parameter in module.parameters.trainable { momentum[parameter.name] = parameter.momentum?.toArray() }
                try journal.saveEpochCheckpoint(EpochCheckpoint(module: k, lap: lap, epochsDone: epoch + 1,
                                                                parameters: module.parameters.snapshot(), momentum: momentum,
                                                                transport: transport, logs: logs))
            }
            try observer?(.epochFinished(log))
        }
        return logs
    }

    /// Recomputes the batch-norm running statistics of a chain of modules as the cumulative
    /// average of their batch statistics over one pass of `source` in training mode (no
    /// parameter changes). The first module must own its input buffer.
    func recalibrate(_ modules: [ResNetModule], source: SampleSource) throws {
        for module in modules { module.resetRunningStatistics() }
        let first = modules[0]
        let size = min(configuration.batchSize, first.batchCapacity)
        var offset = 0
        var step = 0
        for rows in BatchSchedule.recalibrationBatches(count: source.count, size: size) {
            try source.fill(indices: Array(offset..<(offset + rows))[...], into: first.inputBuffer, labels: first.labelsBuffer)
            step += 1
            var input = UnsafePointer(first.inputBuffer)
            for module in modules {
                module.batchNormMomentum = 1 / Float(step)
                module.forward(input, batch: rows, training: true)
                input = UnsafePointer(module.output)
            }
            offset += rows
        }
        for module in modules { module.batchNormMomentum = 0.1 }
    }

    /// Streams every sample of `source` through a frozen module (eval mode), writing its
    /// outputs as level `level` of `split`, and measures its head's accuracy and kinetic energy.
    func stream(_ module: ResNetModule, source: SampleSource, level: Int, split: Split) throws -> (accuracy: Double, kinetic: Double) {
        try cache.beginLevel(level, split: split, count: source.count, shape: module.outputShape)
        var correct = 0
        var kinetic = 0.0
        var offset = 0
        for rows in BatchSchedule.sequentialBatches(count: source.count, size: module.batchCapacity) {
            try source.fill(indices: Array(offset..<(offset + rows))[...], into: module.inputBuffer, labels: module.labelsBuffer)
            module.forward(module.inputBuffer, batch: rows, training: false)
            correct += countCorrect(logits: module.logits!, labels: module.labelsBuffer, batch: rows, classes: modelConfig.classes)
            kinetic += module.kineticEnergy(batch: rows) * Double(rows)
            try cache.write(level: level, split: split, offset: offset, rows: rows, values: module.output, labels: module.labelsBuffer)
            offset += rows
        }
        try cache.finishLevel(level, split: split)
        return (Double(correct) / Double(max(source.count, 1)), kinetic / Double(max(source.count, 1)))
    }

    // MARK: parallel and end-to-end (all modules resident)

    func runResident(train: SampleSource, test: SampleSource, endToEnd: Bool) throws -> TrainingResult {
        var result = TrainingResult(configuration: configuration)
        let count = modelConfig.modules
        var modules: [ResNetModule] = []
        for k in 0..<count {
            let hasHead = !endToEnd || k == count - 1
            let module = try ResNetModule(configuration: modelConfig, index: k, hasHead: hasHead, ledger: ledger)
            Initialization.initialize(module.parameters, gain: modelConfig.initGain, seed: configuration.seed, module: k)
            let options = trainingOptions(ownsInput: k == 0, needsInputGradient: endToEnd && k > 0)
            try module.prepare(options)
            try observer?(.moduleStarted(module: k, lap: 0, epochs: configuration.residentEpochs, plan: module.memoryPlan(options)))
            modules.append(module)
        }
        let flopsStart = KernelCounters.flops
        let start = DispatchTime.now().uptimeNanoseconds
        ledger.mark("resident")
        let epochs = configuration.residentEpochs
        var generator = SeededGenerator.stream(seed: configuration.seed, "shuffle-resident")
        var transports = (0..<count).map { TransportWeight(schedule: configuration.tau, module: $0, modules: count) }
        let first = modules[0]
        for epoch in 0..<epochs {
            let rate = configuration.schedule.rate(base: configuration.optimizer.learningRate, epoch: epoch, epochs: epochs)
            let epochStart = DispatchTime.now().uptimeNanoseconds
            var sums = [StepMetrics](repeating: StepMetrics(), count: count)
            var batchCount = 0
            let plan = batches(count: train.count, generator: &generator)
            for (b, indices) in plan.enumerated() {
                let n = indices.count
                try train.fill(indices: indices, into: first.inputBuffer, labels: first.labelsBuffer)
                let labels = UnsafePointer(first.labelsBuffer)
                if endToEnd {
                    var input = UnsafePointer(first.inputBuffer)
                    for module in modules {
                        module.parameters.zeroGradients()
                        module.forward(input, batch: n, training: true)
                        input = UnsafePointer(module.output)
                    }
                    let last = modules[count - 1]
                    let loss = last.headLossAndBackward(labels: labels, batch: n, labelSmoothing: configuration.labelSmoothing)
                    for k in stride(from: count - 1, through: 0, by: -1) {
                        let previous: UnsafeMutablePointer<Float>? = k > 0 ? modules[k - 1].outputGradient : nil
                        previous?.update(repeating: 0, count: n * modules[k - 1].outputCount)
                        modules[k].backward(batch: n, transportWeight: 0, dInput: previous)
                    }
                    for module in modules { configuration.optimizer.step(module.parameters, rate: rate) }
                    sums[count - 1].taskLoss += loss.loss
                    sums[count - 1].correct += loss.correct
                    sums[count - 1].samples += n
                    for k in 0..<count { sums[k].kineticEnergy += modules[k].kineticEnergy(batch: n) }
                } else {
                    var input = UnsafePointer(first.inputBuffer)
                    for (k, module) in modules.enumerated() {
                        module.parameters.zeroGradients()
                        let weight = configuration.tau.isOff ? 0 : Float(transports[k].weight)
                        let metrics = module.trainStep(input: input, labels: labels, batch: n, transportWeight: weight,
                                                       labelSmoothing: configuration.labelSmoothing)
                        configuration.optimizer.step(module.parameters, rate: rate)
                        transports[k].record(taskLoss: metrics.taskLoss)
                        sums[k].taskLoss += metrics.taskLoss
                        sums[k].kineticEnergy += metrics.kineticEnergy
                        sums[k].correct += metrics.correct
                        sums[k].samples += n
                        input = UnsafePointer(module.output)
                    }
                }
                batchCount += 1
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
                var shown = sums[count - 1]
                shown.taskLoss /= Double(batchCount)
                shown.kineticEnergy /= Double(batchCount)
                try observer?(.batch(module: count - 1, lap: 0, epoch: epoch, batch: b + 1, batches: plan.count, metrics: shown,
                                 samplesPerSecond: Double(batchCount * configuration.batchSize) / max(elapsed, 1e-9)))
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
            for k in 0..<count where !endToEnd || k == count - 1 {
                let log = EpochLog(module: k, lap: 0, epoch: epoch, taskLoss: sums[k].taskLoss / Double(max(batchCount, 1)),
                                   kineticEnergy: sums[k].kineticEnergy / Double(max(batchCount, 1)),
                                   trainAccuracy: Double(sums[k].correct) / Double(max(sums[k].samples, 1)), learningRate: rate,
                                   transportWeight: endToEnd || configuration.tau.isOff ? 0 : transports[k].weight,
                                   samples: sums[k].samples, seconds: seconds)
                try checkFinite(log)
                result.epochs.append(log)
                try observer?(.epochFinished(log))
            }
        }
        if configuration.recalibrateBatchNorm { try recalibrate(modules, source: train) }
        // Evaluate every head on the test split, all modules chained in eval mode.
        var correct = [Int](repeating: 0, count: count)
        var kinetic = [Double](repeating: 0, count: count)
        var offset = 0
        for rows in BatchSchedule.sequentialBatches(count: test.count, size: configuration.batchSize) {
            try test.fill(indices: Array(offset..<(offset + rows))[...], into: first.inputBuffer, labels: first.labelsBuffer)
            var input = UnsafePointer(first.inputBuffer)
            for (k, module) in modules.enumerated() {
                module.forward(input, batch: rows, training: false)
                if let logits = module.logits {
                    correct[k] += countCorrect(logits: logits, labels: first.labelsBuffer, batch: rows, classes: modelConfig.classes)
                }
                kinetic[k] += module.kineticEnergy(batch: rows) * Double(rows)
                input = UnsafePointer(module.output)
            }
            offset += rows
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        for k in 0..<count where modules[k].hasHead {
            let evaluation = ModuleEvaluation(module: k, lap: 0, trainAccuracy: result.epochs.last { $0.module == k }?.trainAccuracy,
                                              testAccuracy: Double(correct[k]) / Double(max(test.count, 1)),
                                              kineticEnergy: kinetic[k] / Double(max(test.count, 1)),
                                              peakBytes: ledger.peak, peakBreakdown: ledger.peakBreakdown,
                                              seconds: seconds, flops: KernelCounters.flops - flopsStart)
            result.modules.append(evaluation)
            try observer?(.moduleEvaluated(evaluation))
        }
        modules.removeAll()
        return result
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

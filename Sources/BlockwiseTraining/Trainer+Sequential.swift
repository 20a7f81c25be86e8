import BlockwiseData
import BlockwiseKernels
import Foundation

/// The module-by-module procedures (sequential, multilap): one module resident, its inputs
/// and outputs in the feature cache, progress in the journal.
extension Trainer {

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
                    if problems.isEmpty {
                        snapshots[k] = done.parameters
                    } else if try laterLapRecorded(module: k, after: lap) {
                        // Its values are needed only to start the next lap, which has its own state:
                        // a store of format 1 kept only each module's latest lap.
                        snapshots[k] = nil
                    } else {
                        throw TrainingError.incompleteCheckpoint(module: k, what: "completed-module parameters", problems: problems)
                    }
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
                for (source, split, samples) in [(trainSource, Split.train, train.count), (testSource, Split.test, test.count)]
                    where source.count != configuration.levelRows(k, split: split, samples: samples) {
                    throw TrainingError.levelRowCount(level: k, split: split.rawValue, rows: source.count,
                                                      samples: configuration.levelRows(k, split: split, samples: samples))
                }
                let baseline = ledger.live
                let moduleStart = DispatchTime.now().uptimeNanoseconds
                let workStart = KernelCounters.work
                let io = (cache.bytesRead, cache.bytesWritten, cache.operations)
                let fileBytesStart = cache.fileBytesWritten
                ledger.resetPeak()
                let firstEvent = ledger.eventCount, moduleClock = ledger.elapsedSeconds
                ledger.mark(configuration.lapCount > 1 ? "module \(k + 1) lap \(lap + 1)" : "module \(k + 1)")
                var evaluation: ModuleEvaluation
                var logs: [EpochLog]
                do {
                    let module = try ResNetModule(configuration: modelConfig, index: k, ledger: ledger)
                    if let snapshot = snapshots[k] {
                        try module.parameters.loadChecked(snapshot, module: k, what: "parameters")
                    } else if lap > 0, try journal?.epochCheckpoint(k, lap: lap) == nil,
                              let previous = try journal?.completedModule(k, lap: lap - 1) {
                        // (An epoch checkpoint of this lap, when there is one, replaces these values.)
                        try module.parameters.loadChecked(previous.parameters, module: k, what: "lap \(lap) checkpoint")
                    } else {
                        Initialization.initialize(module.parameters, gain: modelConfig.initGain, seed: configuration.seed, module: k)
                    }
                    let phases = plan.modules[k]
                    try module.prepare(phases.training)
                    try observer?(.moduleStarted(module: k, lap: lap, epochs: configuration.epochsPerLap(module: k),
                                             plan: phases.training.slots))
                    logs = try trainModule(module, source: trainSource, test: testSource, images: inputs.train, lap: lap)
                    if configuration.recalibrateBatchNorm { try recalibrate([module], source: trainSource) }
                    let parameters = module.parameters.snapshot()
                    snapshots[k] = parameters
                    try module.prepare(phases.streaming)
                    ledger.mark("module \(k + 1) streams level \(k + 1)")
                    let level = k + 1
                    // With `pool=N`, module 1 writes N augmented views of the images as level 1, and
                    // module k > 1 maps each view of level k to the same view of level k + 1.
                    let streamed = k == 0 && configuration.poolsAugmentedViews
                        ? AugmentedViews(images: trainSource, views: configuration.poolViews, augmentation: configuration.augment!, seed: configuration.seed)
                        : trainSource
                    let trainEval = try stream(module, source: streamed, level: level, split: .train)
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
                evaluation.work = KernelCounters.work - workStart
                evaluation.flops = evaluation.work!.flops
                evaluation.storeBytesRead = cache.bytesRead - io.0
                evaluation.storeBytesWritten = cache.bytesWritten - io.1
                evaluation.storeOperations = cache.operations - io.2
                if let start = fileBytesStart, let now = cache.fileBytesWritten { evaluation.storeFileBytesWritten = now - start }
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

    /// Whether the journal holds module k in a lap after `lap` (completed or in training).
    func laterLapRecorded(module k: Int, after lap: Int) throws -> Bool {
        guard lap + 1 < configuration.lapCount, let journal else { return false }
        return try journal.epochCheckpoint(k, lap: lap + 1) != nil || journal.completedModule(k, lap: lap + 1) != nil
    }
}

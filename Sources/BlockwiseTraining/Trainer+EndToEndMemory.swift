import BlockwiseData
import BlockwiseKernels
import Foundation

/// Where the end-to-end paging techniques keep tensors between their uses: the run's store. One
/// page is one tensor; each read or write is one storage operation and counts its bytes in the
/// cache's counters.
public protocol TensorPager: FeatureCache {
    func writePage(_ name: String, from values: UnsafePointer<Float>, count: Int) throws
    func readPage(_ name: String, into values: UnsafeMutablePointer<Float>, count: Int) throws
}

/// The modules of an end-to-end run under a memory-saving technique (``EndToEndMemory``): what is
/// resident, what is allocated for one module at a time, and what goes to the store.
///
/// - recompute: every module's parameters, gradients and momentum, each module's input (the
///   checkpoints `checkpoint.k`), one module's arena at a time.
/// - pageActivations: every module's parameters, gradients and momentum; one module's arena; the
///   input being carried forward; saved activations and inputs go to the store in the forward and
///   come back in the backward.
/// - pageActivationsAndWeights: as pageActivations, and one module's parameters, gradients and
///   momentum at a time (the others are in the store).
///
/// All: the input batch and labels, and the gradient carried backward between modules (`grad.carry`).
final class EndToEndChain {
    let technique: EndToEndMemory
    let configuration: TrainingConfiguration
    let phases: [ModulePhase]
    let ledger: MemoryLedger
    let pager: TensorPager?
    var modules: [ResNetModule?]
    /// The resident buffers ``ExecutionPlan/residentSlots(_:)`` lists, by tag.
    let buffers: Arena

    init(configuration: TrainingConfiguration, plan: ExecutionPlan, ledger: MemoryLedger, pager: TensorPager?) throws {
        technique = configuration.endToEndMemory!
        self.configuration = configuration
        phases = plan.resident
        self.ledger = ledger
        self.pager = pager
        precondition(!technique.pages || pager != nil, "paging needs a store")
        buffers = try Arena(plan.residentSlots, ledger: ledger)
        modules = Array(repeating: nil, count: phases.count)
        let model = configuration.model
        for (k, phase) in phases.enumerated() {
            let module = try ResNetModule(configuration: model, index: k, hasHead: phase.hasHead, ledger: ledger)
            Initialization.initialize(module.parameters, gain: model.initGain, seed: configuration.seed, module: k)
            try module.parameters.allocateTrainingState()
            if technique.pagesWeights {
                try writeWeights(module, momentum: true)
            } else {
                modules[k] = module
            }
        }
    }

    var count: Int { phases.count }
    var input: UnsafeMutablePointer<Float> { buffers["batch.input"].data }
    var labels: UnsafeMutablePointer<Int32> { UnsafeMutableRawPointer(buffers["batch.labels"].data).assumingMemoryBound(to: Int32.self) }
    var gradientCarry: UnsafeMutablePointer<Float> { buffers["grad.carry"].data }

    /// Where module k's input is during the step: the batch (k = 0), its checkpoint (recompute),
    /// or the input carried forward (paging).
    func inputBuffer(_ k: Int) -> UnsafeMutablePointer<Float> {
        if k == 0 { return input }
        return technique == .recompute ? buffers["checkpoint.\(k)"].data : buffers["carry.forward"].data
    }

    // MARK: weights in the store (pageActivationsAndWeights)

    func writeWeights(_ module: ResNetModule, momentum: Bool) throws {
        for parameter in module.parameters.all {
            try pager!.writePage("m\(module.index)/\(parameter.name)", from: parameter.value.data, count: parameter.value.count)
            if momentum, let velocity = parameter.momentum {
                try pager!.writePage("m\(module.index)/\(parameter.name).momentum", from: velocity.data, count: velocity.count)
            }
        }
    }

    /// Module k with its parameters in RAM (read from the store when weights are paged; with
    /// their momentum and gradient buffers when `training`).
    func acquire(_ k: Int, training: Bool) throws -> ResNetModule {
        if let module = modules[k] { return module }
        let module = try ResNetModule(configuration: configuration.model, index: k, hasHead: phases[k].hasHead, ledger: ledger)
        if training { try module.parameters.allocateTrainingState() }
        for parameter in module.parameters.all {
            try pager!.readPage("m\(k)/\(parameter.name)", into: parameter.value.data, count: parameter.value.count)
            if training, let velocity = parameter.momentum {
                try pager!.readPage("m\(k)/\(parameter.name).momentum", into: velocity.data, count: velocity.count)
            }
        }
        modules[k] = module
        return module
    }

    /// Gives module k's parameters back to the store (weights paged; `changed` writes the values,
    /// `momentum` the momentum too) and frees them; otherwise only frees its arena.
    func relinquish(_ k: Int, changed: Bool, momentum: Bool) throws {
        guard let module = modules[k] else { return }
        module.releaseArena()
        guard technique.pagesWeights else { return }
        if changed { try writeWeights(module, momentum: momentum) }
        module.release()
        modules[k] = nil
    }

    // MARK: activations in the store (paging)

    /// The slots of module k's arena that its backward reads (saved activations).
    func savedSlots(_ k: Int) -> [SlotSpec] { phases[k].arenaSlots.filter { $0.category == .savedActivations } }

    func pageOut(_ module: ResNetModule) throws {
        let k = module.index
        if k > 0 { try pager!.writePage("m\(k)/input", from: inputBuffer(k), count: phases[k].inputValues) }
        for slot in savedSlots(k) {
            let tensor = module.arena![slot.tag]
            try pager!.writePage("m\(k)/\(slot.tag)", from: tensor.data, count: tensor.count)
        }
    }

    /// Reads module k's saved activations back into its (new) arena and its input into the
    /// carried-forward buffer, which is free in the backward.
    func pageIn(_ module: ResNetModule) throws {
        let k = module.index
        if k > 0 { try pager!.readPage("m\(k)/input", into: inputBuffer(k), count: phases[k].inputValues) }
        for slot in savedSlots(k) {
            let tensor = module.arena![slot.tag]
            try pager!.readPage("m\(k)/\(slot.tag)", into: tensor.data, count: tensor.count)
        }
    }

    /// Copies module k's output [n, C, H, W] to where module k+1 reads its input.
    func carryForward(_ module: ResNetModule, batch n: Int) {
        guard module.index + 1 < count else { return }
        inputBuffer(module.index + 1).update(from: module.output, count: n * module.outputCount)
    }
}

extension Trainer {
    /// `e2e` under a memory-saving technique: the same steps as plain e2e, in the same order of
    /// floating-point operations, with modules allocated, recomputed or paged as the technique says.
    func runEndToEndSaving(train: SampleSource, test: SampleSource) throws -> TrainingResult {
        var result = TrainingResult(configuration: configuration)
        // (Counted from before the chain: with paged weights it writes every module's first values.)
        let io = (cache.bytesRead, cache.bytesWritten, cache.operations)
        let fileStart = cache.fileBytesWritten
        let chain = try EndToEndChain(configuration: configuration, plan: plan, ledger: ledger, pager: pager)
        let count = chain.count, technique = chain.technique
        for k in 0..<count {
            try observer?(.moduleStarted(module: k, lap: 0, epochs: configuration.residentEpochs, plan: plan.resident[k].slots))
        }
        let workStart = KernelCounters.work
        let start = DispatchTime.now().uptimeNanoseconds
        ledger.mark("resident")
        let epochs = configuration.residentEpochs
        var generator = SeededGenerator.stream(seed: configuration.seed, "shuffle-resident")
        let last = count - 1
        var kinetics = [Double](repeating: 0, count: count)
        for epoch in 0..<epochs {
            let rate = configuration.schedule.rate(base: configuration.optimizer.learningRate, epoch: epoch, epochs: epochs)
            let epochStart = DispatchTime.now().uptimeNanoseconds
            var sums = StepMetrics()
            var kineticSums = [Double](repeating: 0, count: count)
            var batchCount = 0
            let schedule = batches(count: train.count, generator: &generator)
            var augmentation = SeededGenerator.stream(seed: configuration.seed, "augment-resident-epoch\(epoch)")
            let imageShape = modelConfig.moduleInputShape(0)
            for (b, indices) in schedule.enumerated() {
                let n = indices.count
                try train.fill(indices: indices, into: chain.input, labels: chain.labels)
                configuration.augment?.apply(chain.input, batch: n, channels: imageShape[0], height: imageShape[1], width: imageShape[2],
                                             generator: &augmentation)
                // Forward through modules 0..K-2, keeping what the technique keeps.
                for k in 0..<last {
                    // (The forward needs no momentum: with paged weights only the values are read.)
                    let module = try chain.acquire(k, training: false)
                    module.parameters.zeroGradients()
                    try module.prepare(chain.phases[k])
                    module.forward(chain.inputBuffer(k), batch: n, training: true)
                    kinetics[k] = module.kineticEnergy(batch: n)
                    if technique.pages { try chain.pageOut(module) }
                    chain.carryForward(module, batch: n)
                    try chain.relinquish(k, changed: true, momentum: false)  // (its running statistics moved)
                }
                // The last module: forward, loss and backward at once (scoped: with paged weights its
                // parameters are freed before the next module's are read).
                let loss = try { () throws -> CrossEntropyResult in
                    let top = try chain.acquire(last, training: true)
                    top.parameters.zeroGradients()
                    try top.prepare(chain.phases[last])
                    top.forward(chain.inputBuffer(last), batch: n, training: true)
                    kinetics[last] = top.kineticEnergy(batch: n)
                    let loss = top.headLossAndBackward(labels: chain.labels, batch: n, labelSmoothing: configuration.labelSmoothing)
                    chain.gradientCarry.update(repeating: 0, count: n * top.inputCount)
                    top.backward(batch: n, transportWeight: 0, dInput: chain.gradientCarry)
                    if technique.pagesWeights {
                        configuration.optimizer.step(top.parameters, rate: rate)
                        try chain.relinquish(last, changed: true, momentum: true)
                    } else {
                        top.releaseArena()
                    }
                    return loss
                }()
                // Backward through modules K-2..0: recomputed or paged in, then the carried gradient.
                for k in stride(from: last - 1, through: 0, by: -1) {
                    let module = try chain.acquire(k, training: true)
                    if technique.pagesWeights { module.parameters.zeroGradients() }  // (just read back: accumulate from zero)
                    try module.prepare(chain.phases[k])
                    if technique == .recompute {
                        // The running statistics moved in the first forward: momentum 0 leaves them as they are.
                        module.batchNormMomentum = 0
                        module.forward(chain.inputBuffer(k), batch: n, training: true)
                        module.batchNormMomentum = 0.1
                    } else {
                        try chain.pageIn(module)
                        module.attachInputs(chain.inputBuffer(k))
                    }
                    module.outputGradient.update(from: chain.gradientCarry, count: n * module.outputCount)
                    let dInput: UnsafeMutablePointer<Float>? = k > 0 ? chain.gradientCarry : nil
                    dInput?.update(repeating: 0, count: n * module.inputCount)
                    module.backward(batch: n, transportWeight: 0, dInput: dInput)
                    if technique.pagesWeights {
                        configuration.optimizer.step(module.parameters, rate: rate)
                        try chain.relinquish(k, changed: true, momentum: true)
                    } else {
                        module.releaseArena()
                    }
                }
                if !technique.pagesWeights {
                    for module in chain.modules { configuration.optimizer.step(module!.parameters, rate: rate) }
                }
                sums.taskLoss += loss.loss
                sums.correct += loss.correct
                sums.samples += n
                for k in 0..<count { kineticSums[k] += kinetics[k] }
                batchCount += 1
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
                var shown = sums
                shown.taskLoss /= Double(batchCount)
                shown.kineticEnergy = kineticSums[last] / Double(batchCount)
                try observer?(.batch(module: last, lap: 0, epoch: epoch, batch: b + 1, batches: schedule.count, metrics: shown,
                                     samplesPerSecond: Double(batchCount * configuration.batchSize) / max(elapsed, 1e-9)))
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
            let log = EpochLog(module: last, lap: 0, epoch: epoch, taskLoss: sums.taskLoss / Double(max(batchCount, 1)),
                               kineticEnergy: kineticSums[last] / Double(max(batchCount, 1)),
                               trainAccuracy: Double(sums.correct) / Double(max(sums.samples, 1)), learningRate: rate,
                               transportWeight: 0, samples: sums.samples, seconds: seconds)
            try checkFinite(log)
            result.epochs.append(log)
            try observer?(.epochFinished(log))
        }
        if configuration.recalibrateBatchNorm { try recalibrate(chain, source: train) }
        // Every head (the last module's) on the test split, the modules chained in eval mode.
        var correct = 0
        var kinetic = [Double](repeating: 0, count: count)
        var offset = 0
        for rows in BatchSchedule.sequentialBatches(count: test.count, size: configuration.batchSize) {
            try test.fill(indices: Array(offset..<(offset + rows))[...], into: chain.input, labels: chain.labels)
            for k in 0..<count {
                let module = try chain.acquire(k, training: false)
                try module.prepare(chain.phases[k])
                module.forward(chain.inputBuffer(k), batch: rows, training: false)
                if let logits = module.logits {
                    correct += countCorrect(logits: logits, labels: chain.labels, batch: rows, classes: modelConfig.classes)
                }
                kinetic[k] += module.kineticEnergy(batch: rows) * Double(rows)
                chain.carryForward(module, batch: rows)
                try chain.relinquish(k, changed: false, momentum: false)
            }
            offset += rows
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var evaluation = ModuleEvaluation(module: last, lap: 0, trainAccuracy: result.epochs.last?.trainAccuracy,
                                          testAccuracy: Double(correct) / Double(max(test.count, 1)),
                                          kineticEnergy: kinetic[last] / Double(max(test.count, 1)),
                                          peakBytes: ledger.peak, peakBreakdown: ledger.peakBreakdown,
                                          seconds: seconds, flops: (KernelCounters.work - workStart).flops, work: KernelCounters.work - workStart)
        evaluation.storeBytesRead = cache.bytesRead - io.0
        evaluation.storeBytesWritten = cache.bytesWritten - io.1
        evaluation.storeOperations = cache.operations - io.2
        if let fileStart, let now = cache.fileBytesWritten { evaluation.storeFileBytesWritten = now - fileStart }
        result.modules.append(evaluation)
        try observer?(.moduleEvaluated(evaluation))
        for k in 0..<count {
            snapshots[k] = try chain.acquire(k, training: false).parameters.snapshot()
            chain.modules[k]?.release()
            chain.modules[k] = nil
        }
        return result
    }

    /// Precise batch norm through the chain: every module's running statistics recomputed as the
    /// cumulative average over one pass of `source` in training mode, one module at a time.
    func recalibrate(_ chain: EndToEndChain, source: SampleSource) throws {
        for k in 0..<chain.count {
            let module = try chain.acquire(k, training: false)
            module.resetRunningStatistics()
            try chain.relinquish(k, changed: true, momentum: false)
        }
        var offset = 0, step = 0
        for rows in BatchSchedule.recalibrationBatches(count: source.count, size: configuration.batchSize) {
            try source.fill(indices: Array(offset..<(offset + rows))[...], into: chain.input, labels: chain.labels)
            step += 1
            for k in 0..<chain.count {
                let module = try chain.acquire(k, training: false)
                try module.prepare(chain.phases[k])
                module.batchNormMomentum = 1 / Float(step)
                module.forward(chain.inputBuffer(k), batch: rows, training: true)
                module.batchNormMomentum = 0.1
                chain.carryForward(module, batch: rows)
                try chain.relinquish(k, changed: true, momentum: false)
            }
            offset += rows
        }
    }
}

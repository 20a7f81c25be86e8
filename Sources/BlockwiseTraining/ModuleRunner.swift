import BlockwiseData
import BlockwiseKernels
import Foundation

/// What the module-by-module procedures do with one module: its epochs, the batch-norm
/// recalibration pass, and streaming its outputs as the next level.
extension Trainer {
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
    /// - test: module k's test inputs, for `--eval-each-epoch`.
    /// - images: the training split's input images, for `--augmented-inputs recompute`.
    func trainModule(_ module: ResNetModule, source: SampleSource, test: SampleSource? = nil, images: SampleSource? = nil,
                     lap: Int) throws -> [EpochLog] {
        let k = module.index
        // Where augmented inputs come from: module 1 augments its images; with `recompute`, module
        // k > 1 takes them through the frozen modules 1..k-1.
        let frozen = ExecutionPlan.recomputesInputs(configuration, module: k)
            ? try FrozenChain(trainer: self, module: k, lap: lap, images: images!, capacity: module.batchCapacity) : nil
        let augmentsImages = k == 0 ? configuration.augment : nil
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
            // The epoch's own augmentation stream: a resumed epoch draws the same shifts and flips.
            var augmentation = SeededGenerator.stream(seed: configuration.seed, "augment-m\(k)-lap\(lap)-epoch\(epoch)")
            let globalEpoch = lap * epochs + epoch
            let rate = configuration.schedule.rate(base: configuration.optimizer.learningRate, epoch: globalEpoch, epochs: totalEpochs)
            let start = DispatchTime.now().uptimeNanoseconds
            var sum = StepMetrics()
            var batchCount = 0
            // With `pool=N`, level k >= 1 holds N views of each sample: the epoch shuffles the samples.
            let samples = source.count / (k > 0 ? configuration.poolViews : 1)
            let plan = batches(count: samples, generator: &generator)
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
                    if let frozen {
                        try frozen.fill(indices: chunk, into: module.inputBuffer, labels: module.labelsBuffer, generator: &augmentation)
                    } else {
                        try source.fill(indices: trainingRows(module: k, indices: chunk, samples: samples, generator: &augmentation),
                                        into: module.inputBuffer, labels: module.labelsBuffer)
                        if let augment = augmentsImages {
                            augment.apply(module.inputBuffer, batch: chunk.count, channels: module.inputShape[0], height: module.inputShape[1],
                                          width: module.inputShape[2], generator: &augmentation)
                        }
                    }
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
            var log = EpochLog(module: k, lap: lap, epoch: epoch, taskLoss: sum.taskLoss / Double(max(batchCount, 1)),
                               kineticEnergy: sum.kineticEnergy / Double(max(batchCount, 1)),
                               trainAccuracy: Double(sum.correct) / Double(max(sum.samples, 1)), learningRate: rate,
                               transportWeight: configuration.tau.isOff ? 0 : transport.weight, samples: sum.samples,
                               seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            if configuration.evalEachEpoch == true, let test { log.testAccuracy = try evaluateHead(module, source: test) }
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

    /// The head's accuracy on `source` in eval mode (running statistics as they are), in the
    /// module's prepared buffers: `--eval-each-epoch`.
    func evaluateHead(_ module: ResNetModule, source: SampleSource) throws -> Double {
        var correct = 0, offset = 0
        for rows in BatchSchedule.sequentialBatches(count: source.count, size: module.batchCapacity) {
            try source.fill(indices: Array(offset..<(offset + rows))[...], into: module.inputBuffer, labels: module.labelsBuffer)
            module.forward(module.inputBuffer, batch: rows, training: false)
            correct += countCorrect(logits: module.logits!, labels: module.labelsBuffer, batch: rows, classes: modelConfig.classes)
            offset += rows
        }
        return Double(correct) / Double(max(source.count, 1))
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
}

import BlockwiseData
import BlockwiseKernels
import Foundation

/// The resident procedures (parallel, e2e): every module in memory at once, nothing cached.
extension Trainer {
    func runResident(train: SampleSource, test: SampleSource, endToEnd: Bool) throws -> TrainingResult {
        var result = TrainingResult(configuration: configuration)
        let count = modelConfig.modules
        var modules: [ResNetModule] = []
        for k in 0..<count {
            let phase = plan.resident[k]
            let module = try ResNetModule(configuration: modelConfig, index: k, hasHead: phase.hasHead, ledger: ledger)
            Initialization.initialize(module.parameters, gain: modelConfig.initGain, seed: configuration.seed, module: k)
            try module.prepare(phase)
            try observer?(.moduleStarted(module: k, lap: 0, epochs: configuration.residentEpochs, plan: phase.slots))
            modules.append(module)
        }
        let workStart = KernelCounters.work
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
            let schedule = batches(count: train.count, generator: &generator)
            var augmentation = SeededGenerator.stream(seed: configuration.seed, "augment-resident-epoch\(epoch)")
            for (b, indices) in schedule.enumerated() {
                let n = indices.count
                try train.fill(indices: indices, into: first.inputBuffer, labels: first.labelsBuffer)
                configuration.augment?.apply(first.inputBuffer, batch: n, channels: first.inputShape[0], height: first.inputShape[1],
                                             width: first.inputShape[2], generator: &augmentation)
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
                try observer?(.batch(module: count - 1, lap: 0, epoch: epoch, batch: b + 1, batches: schedule.count, metrics: shown,
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
                                              seconds: seconds, flops: (KernelCounters.work - workStart).flops,
                                              work: KernelCounters.work - workStart)
            result.modules.append(evaluation)
            try observer?(.moduleEvaluated(evaluation))
        }
        for module in modules { snapshots[module.index] = module.parameters.snapshot() }
        modules.removeAll()
        return result
    }
}

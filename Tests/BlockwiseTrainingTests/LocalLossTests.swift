import BlockwiseKernels
import BlockwiseTraining
import XCTest

final class LocalLossTests: XCTestCase {
    func makeModule(_ ledger: MemoryLedger, batch: Int = 3) throws -> ResNetModule {
        let config = ModelConfiguration(inputChannels: 2, inputHeight: 5, inputWidth: 5, classes: 3, width: 2, modules: 2,
                                        blocksPerModule: 2, head: .oneCNN)
        let module = try ResNetModule(configuration: config, index: 1, ledger: ledger)
        Initialization.initialize(module.parameters, gain: 1, seed: 1, module: 1)
        try module.prepare(ModuleMemoryOptions(batch: batch, training: true))
        return module
    }

    /// With the residual branch's last BN at gamma = 0, r is its beta, constant per channel:
    /// block 0 beta (1, 2) and block 1 beta (0.5, -1) give mean r^2 = (1 + 4) / 2 + (0.25 + 1) / 2 = 3.125.
    func testKineticEnergyIsTheHandComputedMeanOfRSquared() throws {
        let module = try makeModule(MemoryLedger())
        module.parameters["m1.block0.unit2.bn.weight"].value.copy(from: [0, 0])
        module.parameters["m1.block0.unit2.bn.bias"].value.copy(from: [1, 2])
        module.parameters["m1.block1.unit2.bn.weight"].value.copy(from: [0, 0])
        module.parameters["m1.block1.unit2.bn.bias"].value.copy(from: [0.5, -1])
        let input = randomInput(count: 3 * 2 * 25)
        input.withUnsafeBufferPointer { module.forward($0.baseAddress!, batch: 3, training: true) }
        XCTAssertEqual(module.kineticEnergy(batch: 3), 3.125, accuracy: 1e-6)
        let labels: [Int32] = [0, 1, 2]
        let metrics = input.withUnsafeBufferPointer { x in labels.withUnsafeBufferPointer { y in
            module.trainStep(input: x.baseAddress!, labels: y.baseAddress!, batch: 3, transportWeight: 0.2, labelSmoothing: 0)
        } }
        XCTAssertEqual(metrics.kineticEnergy, 3.125, accuracy: 1e-6)
        XCTAssertEqual(metrics.totalLoss, metrics.taskLoss + 0.2 * 3.125, accuracy: 1e-6)
    }

    /// tau = off: the differentiated loss is exactly the task loss and the gradients are those
    /// of the cross-entropy alone.
    func testTauOffIsExactlyTheTaskLoss() throws {
        let ledger = MemoryLedger()
        let module = try makeModule(ledger)
        let input = randomInput(count: 3 * 2 * 25)
        let labels: [Int32] = [2, 0, 1]
        module.parameters.zeroGradients()
        let off = input.withUnsafeBufferPointer { x in labels.withUnsafeBufferPointer { y in
            module.trainStep(input: x.baseAddress!, labels: y.baseAddress!, batch: 3, transportWeight: 0, labelSmoothing: 0.1)
        } }
        XCTAssertEqual(off.totalLoss, off.taskLoss)
        XCTAssertGreaterThan(off.kineticEnergy, 0, "the kinetic energy is still measured for the logs")
        let gradientsOff = module.parameters.trainable.map { $0.gradient!.toArray() }
        module.parameters.zeroGradients()
        let on = input.withUnsafeBufferPointer { x in labels.withUnsafeBufferPointer { y in
            module.trainStep(input: x.baseAddress!, labels: y.baseAddress!, batch: 3, transportWeight: 0.5, labelSmoothing: 0.1)
        } }
        XCTAssertEqual(on.taskLoss, off.taskLoss)
        XCTAssertEqual(on.totalLoss, on.taskLoss + 0.5 * on.kineticEnergy, accuracy: 1e-6)
        // The transport gradient reaches the residual branches but not the head.
        for (parameter, before) in zip(module.parameters.trainable, gradientsOff) {
            let after = parameter.gradient!.toArray()
            if parameter.name.contains(".head.") {
                XCTAssertEqual(after, before, parameter.name)
            } else if parameter.name.contains("unit2.bn.bias") {
                XCTAssertNotEqual(after, before, parameter.name)
            }
        }
    }

    func testTauSchedules() {
        XCTAssertEqual(TauSchedule.off.initialWeight(module: 0, modules: 4), 0)
        XCTAssertEqual(TauSchedule.fixed(tau: 2).initialWeight(module: 3, modules: 4), 0.25)
        // doubled: tau / 2 for the first half (modules 0, 1 of 4), tau after.
        XCTAssertEqual(TauSchedule.doubled(tau: 2).initialWeight(module: 1, modules: 4), 0.5)
        XCTAssertEqual(TauSchedule.doubled(tau: 2).initialWeight(module: 2, modules: 4), 0.25)
        var weight = TransportWeight(schedule: .multipliers(lambda0: 1, h: 1, s: 2), module: 0, modules: 2)
        XCTAssertEqual(weight.weight, 1)
        weight.record(taskLoss: 3)
        XCTAssertEqual(weight.weight, 1, "lambda changes every s = 2 iterations")
        weight.record(taskLoss: 1)
        XCTAssertEqual(weight.lambda, 3)  // 1 + 1 * mean(3, 1)
        XCTAssertEqual(weight.weight, 1.0 / 3.0)
    }

    func testLearningRateSchedules() {
        XCTAssertEqual(LearningRateSchedule.constant.rate(base: 0.1, epoch: 7, epochs: 10), 0.1)
        XCTAssertEqual(LearningRateSchedule.cosine.rate(base: 0.1, epoch: 0, epochs: 10), 0.1)
        XCTAssertEqual(LearningRateSchedule.cosine.rate(base: 0.1, epoch: 5, epochs: 10), 0.05, accuracy: 1e-12)
        let step = LearningRateSchedule.step(milestones: [0.5, 0.75], factor: 0.1)
        XCTAssertEqual(step.rate(base: 1, epoch: 4, epochs: 10), 1)
        XCTAssertEqual(step.rate(base: 1, epoch: 5, epochs: 10), 0.1, accuracy: 1e-12)
        XCTAssertEqual(step.rate(base: 1, epoch: 8, epochs: 10), 0.01, accuracy: 1e-12)
    }

    /// SGD with momentum as PyTorch: v = mu v + (g + wd w); w -= lr v.
    func testSGDStep() throws {
        let ledger = MemoryLedger()
        let store = try ParameterStore(specs: [ParameterSpec(name: "w", shape: [2], role: .bias)], ledger: ledger)
        try store.allocateTrainingState()
        store["w"].value.copy(from: [1, -2])
        store["w"].gradient!.copy(from: [0.5, 0.5])
        let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        sgd.step(store, rate: 0.1)
        // g = 0.5 + 0.01 * w = 0.51, -> w = 1 - 0.051; 0.48 -> -2 - 0.048
        XCTAssertEqual(store["w"].value[0], 0.949, accuracy: 1e-6)
        XCTAssertEqual(store["w"].value[1], -2.048, accuracy: 1e-6)
        sgd.step(store, rate: 0.1)  // v = 0.9 * 0.51 + (0.5 + 0.01 * 0.949)
        let velocity: Float = 0.9 * 0.51 + 0.5 + 0.00949
        XCTAssertEqual(store["w"].value[0], 0.949 - 0.1 * velocity, accuracy: 1e-6)
        var decoupled = sgd
        decoupled.weightDecayMode = .decoupled
        decoupled.momentum = 0
        store["w"].value.copy(from: [1, 1])
        store["w"].gradient!.copy(from: [0, 0])
        decoupled.step(store, rate: 0.1)
        XCTAssertEqual(store["w"].value[0], 1 - 0.1 * 0.01, accuracy: 1e-7)
    }

    func randomInput(count: Int) -> [Float] {
        var generator = SeededGenerator(seed: 5)
        return (0..<count).map { _ in Float(generator.nextNormal()) }
    }
}

/// With two kernel threads (batch-split convolutions, channel-split batch norm, range-split
/// element-wise layers) a training step gives the one-thread result up to the order of sums.
final class ThreadedStepTests: XCTestCase {
    func gradients(threads: Int, engine: ConvolutionEngine) throws -> (loss: Double, gradients: [[Float]]) {
        // setKernelThreads sizes oneDNN's team too (KernelThreads alone is ignored by oneDNN).
        setKernelThreads(threads)
        ConvolutionEngine.selected = engine
        defer { setKernelThreads(1); ConvolutionEngine.selected = .onednn }
        let config = ModelConfiguration(inputChannels: 8, inputHeight: 28, inputWidth: 28, classes: 10, width: 8, modules: 2,
                                        blocksPerModule: 2, downsampleAt: [1], head: .oneCNN)
        let module = try ResNetModule(configuration: config, index: 1, ledger: MemoryLedger())
        Initialization.initialize(module.parameters, gain: 0.5, seed: 4, module: 1)
        try module.prepare(ModuleMemoryOptions(batch: 16, training: true))
        var generator = SeededGenerator(seed: 9)
        for i in 0..<(16 * 8 * 28 * 28) { module.inputBuffer[i] = Float(generator.nextNormal()) }
        for i in 0..<16 { module.labelsBuffer[i] = Int32(i % 10) }
        module.parameters.zeroGradients()
        let metrics = module.trainStep(input: module.inputBuffer, labels: module.labelsBuffer, batch: 16, transportWeight: 0.3, labelSmoothing: 0.1)
        return (metrics.totalLoss, module.parameters.trainable.map { $0.gradient!.toArray() })
    }

    func testTwoThreadsMatchOne() throws {
        for engine in ConvolutionEngine.allCases {
        let one = try gradients(threads: 1, engine: engine), two = try gradients(threads: 2, engine: engine)
        XCTAssertEqual(one.loss, two.loss, accuracy: 1e-5)
        for (a, b) in zip(one.gradients, two.gradients) {
            let scale = max(a.map(abs).max() ?? 0, 1e-3)
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 2e-3 * scale, "\(engine)") }
        }
        }
    }
}

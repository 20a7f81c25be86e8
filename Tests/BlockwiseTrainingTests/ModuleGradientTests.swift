import BlockwiseKernels
import BlockwiseTraining
import XCTest

/// A finite-difference check of whole modules: encoder, BasicBlocks (with a downsampling,
/// option-A block), the head, the cross-entropy and the transport term together.
final class ModuleGradientTests: XCTestCase {
    /// loss = CE(head(T(x)), y) + w * sum_blocks mean(r^2), forward only (train-mode BN).
    func loss(_ module: ResNetModule, input: [Float], labels: [Int32], batch: Int, weight: Float) -> Double {
        input.withUnsafeBufferPointer { module.forward($0.baseAddress!, batch: batch, training: true) }
        let ce = labels.withUnsafeBufferPointer {
            softmaxCrossEntropy(logits: module.logits!, labels: $0.baseAddress!, batch: batch,
                                classes: module.configuration.classes, labelSmoothing: 0.1, dLogits: nil)
        }
        return ce.loss + Double(weight) * module.kineticEnergy(batch: batch)
    }

    func check(_ name: String, _ config: ModelConfiguration, index: Int, weight: Float, checkInput: Bool, workspace: Int? = nil) throws {
        let ledger = MemoryLedger()
        let module = try ResNetModule(configuration: config, index: index, ledger: ledger)
        Initialization.initialize(module.parameters, gain: 1.0, seed: 3, module: index)
        // Non-trivial BN affine parameters.
        var generator = SeededGenerator(seed: 99)
        for parameter in module.parameters.trainable where parameter.name.contains("bn.") || parameter.name.hasSuffix(".bias") {
            for i in 0..<parameter.value.count { parameter.value[i] += Float(generator.nextNormal()) * 0.2 }
        }
        let batch = 4
        try module.prepare(ModuleMemoryOptions(batch: batch, training: true, workspaceBound: workspace, needsInputGradient: checkInput))
        let inputCount = batch * module.inputShape.reduce(1, *)
        var input = (0..<inputCount).map { _ in Float(generator.nextNormal()) }
        let labels: [Int32] = (0..<batch).map { Int32($0 * 7 % config.classes) }
        // Analytic gradients.
        module.parameters.zeroGradients()
        var dInput = [Float](repeating: 0, count: inputCount)
        input.withUnsafeBufferPointer { module.forward($0.baseAddress!, batch: batch, training: true) }
        _ = labels.withUnsafeBufferPointer { module.headLossAndBackward(labels: $0.baseAddress!, batch: batch, labelSmoothing: 0.1) }
        dInput.withUnsafeMutableBufferPointer {
            module.backward(batch: batch, transportWeight: weight, dInput: checkInput ? $0.baseAddress! : nil)
        }
        let h: Float = 1e-3
        var worst = 0.0
        var probes = 0
        func compare(_ label: String, _ numeric: Double, _ analytic: Double) {
            let error = abs(numeric - analytic)
            // Tolerance: 2e-3 absolute + 5% relative (Float32 forward, h = 1e-3).
            let allowed = 2e-3 + 5e-2 * max(abs(numeric), abs(analytic))
            worst = max(worst, error / allowed)
            probes += 1
            XCTAssertLessThanOrEqual(error, allowed, "\(name): \(label): numeric \(numeric) analytic \(analytic)")
        }
        // Element-wise probes. ReLU kinks are dense in a module at batch 4 (batch-statistics BN
        // couples every sample), so a +-h step often crosses one: then the central difference
        // averages two slopes while the analytic gradient is the slope at the point. Each probe
        // therefore also computes the one-sided differences, and passes if the analytic gradient
        // matches the central one or a one-sided one whose side has no kink (the two one-sided
        // slopes of a smooth side agree with the central one to O(h)).
        func probe(_ label: String, analytic: Double, set: (Float) -> Void, at value: Float) {
            set(value + h)
            let plus = loss(module, input: input, labels: labels, batch: batch, weight: weight)
            set(value - h)
            let minus = loss(module, input: input, labels: labels, batch: batch, weight: weight)
            set(value)
            let center = loss(module, input: input, labels: labels, batch: batch, weight: weight)
            let central = (plus - minus) / Double(2 * h)
            let candidates = [central, (plus - center) / Double(h), (center - minus) / Double(h)]
            let best = candidates.min { abs($0 - analytic) < abs($1 - analytic) }!
            compare(label, best, analytic)
        }
        for parameter in module.parameters.trainable {
            let analytic = parameter.gradient!.toArray()
            var indices = Array(0..<parameter.value.count)
            indices.seededShuffle(using: &generator)
            for i in indices.prefix(4) {
                probe("\(parameter.name)[\(i)]", analytic: Double(analytic[i]), set: { parameter.value[i] = $0 }, at: parameter.value[i])
            }
        }
        if checkInput {
            for i in stride(from: 0, to: inputCount, by: max(1, inputCount / 12)) {
                probe("input[\(i)]", analytic: Double(dInput[i]), set: { input[i] = $0 }, at: input[i])
            }
        }
        print("module gradient check \(name): \(probes) probes, worst error / tolerance = \(String(format: "%.3f", worst))")
    }

    func testFirstModuleWithEncoderAndOneCNNHead() throws {
        var config = ModelConfiguration(inputChannels: 2, inputHeight: 9, inputWidth: 7, classes: 3, width: 3, modules: 2,
                                        blocksPerModule: 2, encoderDownsamplings: 1, head: .oneCNN)
        config.initGain = 1
        try check("module 0 (encoder s2, 2 blocks, 1cnn, w=0.7)", config, index: 0, weight: 0.7, checkInput: false)
    }

    func testDownsamplingModuleWithInputGradient() throws {
        let config = ModelConfiguration(inputChannels: 1, inputHeight: 7, inputWidth: 7, classes: 3, width: 2, modules: 3,
                                        blocksPerModule: 2, downsampleAt: [1], head: .oneCNN)
        try check("module 1 (option-A downsampling, input gradient)", config, index: 1, weight: 0.5, checkInput: true)
    }

    func testLinearHeadWithoutTransport() throws {
        let config = ModelConfiguration(inputChannels: 1, inputHeight: 6, inputWidth: 6, classes: 4, width: 3, modules: 2,
                                        blocksPerModule: 1, head: .linear)
        try check("module 1 (linear head, transport off)", config, index: 1, weight: 0, checkInput: true)
    }
}


import BlockwiseKernels
import Foundation

/// Steady-state training throughput of one module (`blockwise bench train`): one BasicBlock at
/// width W plus the `1cnn` head, the transport term and an SGD-momentum step, on cached
/// W x 28 x 28 inputs — the setting of the PyTorch reference figures in issue 7.
public enum TrainingBenchmark {
    public struct Row: Sendable {
        public var width: Int
        public var batch: Int
        public var secondsPerStep: Double
        /// 3 convolutions x (forward + backward-data + backward-weights), as the reference counts them.
        public var effectiveFlopsPerStep: Int
        public var countedFlopsPerStep: Int
        public var peakBytes: Int
        public var imagesPerSecond: Double { Double(batch) / secondsPerStep }
        public var effectiveGflops: Double { Double(effectiveFlopsPerStep) / secondsPerStep / 1e9 }
    }

    public static func run(width: Int, batch: Int = 128, size: Int = 28, steps: Int = 8, workspaceBound: Int? = nil,
                           arena: ArenaLayout = .slots, placedWorkspace: Bool = false) throws -> Row {
        let model = ModelConfiguration(inputChannels: width, inputHeight: size, inputWidth: size, classes: 10, width: width,
                                       modules: 2, blocksPerModule: 1, head: .oneCNN)
        let ledger = MemoryLedger()
        let module = try ResNetModule(configuration: model, index: 1, ledger: ledger)
        Initialization.initialize(module.parameters, gain: 0.1, seed: 1, module: 1)
        try module.prepare(ModuleMemoryOptions(batch: batch, training: true, workspaceBound: workspaceBound, packedArena: arena != .slots,
                                                   recomputesConvolutions: arena == .smallest, placedWorkspace: placedWorkspace))
        var generator = SeededGenerator(seed: 2)
        for i in 0..<(batch * width * size * size) { module.inputBuffer[i] = Float(generator.nextNormal()) }
        for i in 0..<batch { module.labelsBuffer[i] = Int32(i % 10) }
        let sgd = SGD(learningRate: 0.01)
        func step() {
            module.parameters.zeroGradients()
            _ = module.trainStep(input: module.inputBuffer, labels: module.labelsBuffer, batch: batch, transportWeight: 0.5, labelSmoothing: 0)
            sgd.step(module.parameters, rate: 0.01)
        }
        step()  // warm-up
        let flopsBefore = KernelCounters.flops
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<steps { step() }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
        let conv = Conv2dGeometry(inputChannels: width, outputChannels: width, kernelSize: 3, inputHeight: size, inputWidth: size)
        return Row(width: width, batch: batch, secondsPerStep: seconds, effectiveFlopsPerStep: 9 * conv.forwardFlops(batch: batch),
                   countedFlopsPerStep: (KernelCounters.flops - flopsBefore) / steps, peakBytes: ledger.peak)
    }
}

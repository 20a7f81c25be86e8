import BlockwiseKernels
import BlockwiseTraining
import XCTest

/// The plan is what the runtime allocates: exact byte counts, no allocation during a step.
final class MemoryPlanTests: XCTestCase {
    func testPreparedModuleHoldsExactlyItsPlanAndStepsAllocateNothing() throws {
        for (head, training, downsample) in [(HeadKind.oneCNN, true, false), (.linear, true, true), (.oneCNN, false, true)] {
            let config = ModelConfiguration(width: 4, modules: 2, blocksPerModule: 2, encoderDownsamplings: 1,
                                            downsampleAt: downsample ? [1] : [], head: head)
            for index in 0..<2 {
                let ledger = MemoryLedger()
                let options = ModuleMemoryOptions(batch: 5, training: training, workspaceBound: 300)
                let plan = ResNetModule.memoryPlan(configuration: config, index: index, options)
                let module = try ResNetModule(configuration: config, index: index, ledger: ledger)
                try module.prepare(options)
                XCTAssertEqual(ledger.liveBytes, plan.totalBytes)
                XCTAssertEqual(ledger.live, plan.breakdown)
                if training {
                    let labels = [Int32](repeating: 1, count: 5)
                    labels.withUnsafeBufferPointer { module.labelsBuffer.update(from: $0.baseAddress!, count: 5) }
                    _ = module.trainStep(input: module.inputBuffer, labels: module.labelsBuffer, batch: 5,
                                         transportWeight: 0.1, labelSmoothing: 0)
                } else {
                    module.forward(module.inputBuffer, batch: 5, training: false)
                }
                XCTAssertEqual(ledger.peak, plan.totalBytes, "peak equals the plan (\(head), training \(training), module \(index))")
                module.release()
                XCTAssertEqual(ledger.liveBytes, plan.filter { $0.category == .parameters }.totalBytes)
            }
        }
    }

    /// Exact bytes of a fixed configuration, by hand: module 1 of width 4, 1 block, linear head,
    /// batch 2, 6x6 inputs, training.
    func testExactBytesOfASmallModule() {
        let config = ModelConfiguration(inputHeight: 6, inputWidth: 6, classes: 10, width: 4, modules: 2, head: .linear)
        let plan = ResNetModule.memoryPlan(configuration: config, index: 1, ModuleMemoryOptions(batch: 2, training: true))
        let breakdown = plan.breakdown
        // Parameters: 2 convs 4x4x3x3 (144 each) + 2 BNs x 4 x 4 (gamma, beta, mean, var) + linear 10x4 + 10.
        XCTAssertEqual(breakdown[.parameters], (2 * 144 + 2 * 16 + 40 + 10) * 4)
        // Gradients and momentum: trainable only (no running statistics).
        XCTAssertEqual(breakdown[.gradients], (2 * 144 + 2 * 8 + 50) * 4)
        XCTAssertEqual(breakdown[.optimizerState], (2 * 144 + 2 * 8 + 50) * 4)
        // Saved: unit1 conv + out (2x4x36 each) + mean/rstd 8; unit2 conv + mean/rstd (its output r is
        // written into the block output, 288); pool 8 + logits 20.
        XCTAssertEqual(breakdown[.savedActivations], ((288 + 288 + 8) + (288 + 8) + 288 + 8 + 20) * 4)
        // I/O: input 2x4x36 + 2 labels.
        XCTAssertEqual(breakdown[.ioBuffers], (288 + 2) * 4)
        // Workspace: im2col (36 + 4) x 36 pixels, grad.output 288, one scratch 288, head grads:
        // logits 20 + pool 8. (No ping-pong pair: one block and no encoder.)
        XCTAssertEqual(breakdown[.workspace], (40 * 36 + 288 + 288 + 28) * 4)
    }
}

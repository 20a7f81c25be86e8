import BlockwiseKernels
import XCTest

final class MemoryLedgerTests: XCTestCase {
    /// A 3x3 conv 8 -> 16 channels on 10x10 images, batch 4, forward + backward, every buffer
    /// from the ledger: the peak is the sum of all buffers, computed by hand below.
    func testExactBytesOfAConvLayerForwardAndBackward() throws {
        let ledger = MemoryLedger()
        let g = Conv2dGeometry(inputChannels: 8, outputChannels: 16, kernelSize: 3, inputHeight: 10, inputWidth: 10)
        let batch = 4
        let workspaceBound = (72 + 16) * 25  // 25 output pixels per chunk: columns (72) + outputs (16) each
        do {
            let weight = try Tensor(g.weightShape, category: .parameters, tag: "conv.weight", ledger: ledger)
            let bias = try Tensor([16], category: .parameters, tag: "conv.bias", ledger: ledger)
            let dWeight = try Tensor(g.weightShape, category: .gradients, tag: "conv.dWeight", ledger: ledger)
            let dBias = try Tensor([16], category: .gradients, tag: "conv.dBias", ledger: ledger)
            let input = try Tensor([batch, 8, 10, 10], category: .ioBuffers, tag: "input", ledger: ledger)
            let output = try Tensor([batch, 16, 10, 10], category: .savedActivations, tag: "output", ledger: ledger)
            let workspace = try Tensor([g.workspaceFloats(bound: workspaceBound, batch: batch)], category: .workspace, tag: "im2col", ledger: ledger)
            conv2dForward(output: output.data, input: input.data, weight: weight.data, bias: bias.data, batch: batch,
                          geometry: g, workspace: workspace.data, workspaceCount: workspace.count)
            let dOutput = try Tensor([batch, 16, 10, 10], category: .workspace, tag: "dOutput", ledger: ledger)
            let dInput = try Tensor([batch, 8, 10, 10], category: .workspace, tag: "dInput", ledger: ledger)
            conv2dBackward(dInput: dInput.data, dWeight: dWeight.data, dBias: dBias.data, dOutput: dOutput.data,
                           input: input.data, weight: weight.data, batch: batch, geometry: g,
                           workspace: workspace.data, workspaceCount: workspace.count)
            let parameters = (16 * 8 * 9 + 16) * 4  // 4672
            XCTAssertEqual(ledger.live[.parameters], parameters)
            XCTAssertEqual(ledger.live[.gradients], parameters)
            XCTAssertEqual(ledger.live[.ioBuffers], 4 * 8 * 100 * 4)          // 12800
            XCTAssertEqual(ledger.live[.savedActivations], 4 * 16 * 100 * 4)  // 25600
            XCTAssertEqual(ledger.live[.workspace], 88 * 25 * 4 + 25600 + 12800)
            XCTAssertEqual(ledger.peak, 4672 * 2 + 12800 + 25600 + 8800 + 25600 + 12800)  // 94944
            XCTAssertEqual(ledger.peakBreakdown, ledger.live)
        }
        XCTAssertEqual(ledger.liveBytes, 0, "every tensor returned its bytes")
        XCTAssertEqual(ledger.peak, 94944)
    }

    func testBudgetOneByteTooSmallFailsBeforeAllocating() throws {
        let needed = 4 * 100 + 4 * 50
        let ledger = MemoryLedger(budget: needed - 1)
        let first = try Tensor([100], category: .parameters, tag: "w", ledger: ledger)
        XCTAssertThrowsError(try Tensor([50], category: .savedActivations, tag: "block1.conv1.out", ledger: ledger)) { error in
            guard let error = error as? BudgetExceededError else { return XCTFail("wrong error \(error)") }
            XCTAssertEqual(error.category, .savedActivations)
            XCTAssertEqual(error.tag, "block1.conv1.out")
            XCTAssertEqual(error.requested, 200)
            XCTAssertEqual(error.available, 199)
            XCTAssertTrue(error.description.contains("block1.conv1.out"))
        }
        XCTAssertEqual(ledger.liveBytes, 400, "the refused allocation was not counted")
        _ = first
        let exact = MemoryLedger(budget: needed)
        let a = try Tensor([100], category: .parameters, tag: "w", ledger: exact)
        let b = try Tensor([50], category: .savedActivations, tag: "x", ledger: exact)
        XCTAssertEqual(exact.liveBytes, needed)
        _ = (a, b)
    }

    func testPeakAfterAllocFreeSequences() throws {
        let ledger = MemoryLedger()
        var a: Tensor? = try Tensor([10], category: .parameters, tag: "a", ledger: ledger)    // 40
        var b: Tensor? = try Tensor([20], category: .workspace, tag: "b", ledger: ledger)     // 80 -> 120
        b = nil                                                                               // 40
        let c = try Tensor([25], category: .savedActivations, tag: "c", ledger: ledger)       // 140: new peak
        a = nil                                                                               // 100
        let d = try Tensor([5], category: .workspace, tag: "d", ledger: ledger)               // 120
        XCTAssertEqual(ledger.peak, 140)
        XCTAssertEqual(ledger.peakBreakdown, MemoryBreakdown([.parameters: 40, .savedActivations: 100]))
        XCTAssertEqual(ledger.liveBytes, 120)
        XCTAssertEqual(ledger.peakBreakdown.largest, .savedActivations)
        ledger.resetPeak()
        XCTAssertEqual(ledger.peak, 120)
        XCTAssertEqual(ledger.timeline.last?.total, 120)
        XCTAssertEqual(ledger.timeline.map(\.total), [40, 120, 40, 140, 100, 120])
        _ = (a, b, c, d)
    }

    func testExternalBytesCountAgainstTheBudget() throws {
        let ledger = MemoryLedger(budget: 1000)
        try ledger.setExternal(600, category: .storeEngine, tag: "sqlite")
        XCTAssertThrowsError(try Tensor([200], category: .ioBuffers, tag: "batch", ledger: ledger))
        try ledger.setExternal(100, category: .storeEngine, tag: "sqlite")
        XCTAssertEqual(ledger.live[.storeEngine], 100)
        XCTAssertEqual(ledger.peak, 600)
    }

    func testFormatBytes() {
        XCTAssertEqual(formatBytes(512), "512 B")
        XCTAssertEqual(formatBytes(262_144), "256 KiB")
        XCTAssertEqual(formatBytes(1_572_864), "1.50 MiB")
    }

    /// A saw-tooth of allocations (each batch allocating and freeing buffers, as the frozen chain of
    /// `--augmented-inputs recompute` does) is halved when the timeline is full: the earlier
    /// compaction kept every local maximum, nearly every event of a saw-tooth, and so compacted on
    /// almost every event. The highest point and the last event survive.
    func testTimelineCompactionHalvesASawTooth() throws {
        let ledger = MemoryLedger()
        ledger.timelineCapacity = 1000
        try ledger.reserve(5000, category: .parameters, tag: "high")
        ledger.release(5000, category: .parameters, tag: "high")
        for i in 0..<499 {
            try ledger.reserve(100 + i % 7, category: .workspace, tag: "t")
            ledger.release(100 + i % 7, category: .workspace, tag: "t")
        }
        XCTAssertEqual(ledger.timeline.count, 1000, "full, not yet compacted")
        try ledger.reserve(100, category: .workspace, tag: "t")  // event 1001: one compaction
        XCTAssertLessThanOrEqual(ledger.timeline.count, 502, "one compaction halves it")
        XCTAssertGreaterThanOrEqual(ledger.timeline.count, 500)
        XCTAssertEqual(ledger.timeline.map(\.total).max(), 5000, "the peak survives")
        XCTAssertEqual(ledger.timeline.last?.sequence, ledger.eventCount, "the last event survives")
    }
}

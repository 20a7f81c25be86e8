import BlockwiseKernels
import BlockwiseTraining
import XCTest

/// Issue 19: the lifetimes of a phase's tensors, the liveness lower bound and the offline placement.
final class ArenaPlanTests: XCTestCase {
    let configurations: [(String, ModelConfiguration)] = [
        ("1cnn, encoder", ModelConfiguration(width: 4, modules: 2, blocksPerModule: 1, encoderDownsamplings: 1, head: .oneCNN)),
        ("two blocks, downsampling, linear head", ModelConfiguration(width: 4, modules: 2, blocksPerModule: 2, encoderDownsamplings: 1,
                                                                     downsampleAt: [1], head: .linear)),
        ("three blocks, no encoder downsampling", ModelConfiguration(width: 3, modules: 2, blocksPerModule: 3, encoderDownsamplings: 0, head: .oneCNN)),
    ]

    func phases(_ model: ModelConfiguration, batch: Int) -> [(String, ModulePhase)] {
        var c = TrainingConfiguration()
        c.model = model
        c.workspaceBound = 300
        return (0..<model.modules).flatMap { k in
            [("module \(k + 1) training", ExecutionPlan.trainingPhase(c, module: k, batch: batch)),
             ("module \(k + 1) streaming", ExecutionPlan.streamingPhase(c, module: k, batch: batch))]
        }
    }

    /// No two tensors live at once overlap; lower bound <= placed arena <= today's slots.
    func testThePlacementIsValidAndBetweenTheBounds() throws {
        for (name, model) in configurations {
            for (phaseName, phase) in phases(model, batch: 6) {
                let lifetimes = try XCTUnwrap(phase.lifetimes(configuration: model), "\(name), \(phaseName)")
                let placement = ArenaPlacement(lifetimes)
                XCTAssertTrue(placement.conflicts.isEmpty, "\(name), \(phaseName): \(placement.conflicts)")
                XCTAssertEqual(placement.placed.count, lifetimes.tensors.count)
                XCTAssertLessThanOrEqual(lifetimes.peakOperation.bytes, placement.size, "\(name), \(phaseName)")
                XCTAssertLessThanOrEqual(lifetimes.resident + placement.size, phase.breakdown.total + ArenaPlacement.alignment * lifetimes.tensors.count,
                                         "\(name), \(phaseName): the packed arena is no larger than today's slots")
                XCTAssertEqual(lifetimes.resident, phase.parameterSlots.totalBytes + phase.arenaSlots.filter { $0.category == .ioBuffers }.totalBytes)
            }
        }
    }

    /// The lifetimes are what the layers do: at the start of every operation each part of the
    /// real buffers that no live tensor holds is overwritten (NaN, then a large number), and a
    /// training step and a streaming forward still give bit for bit the same loss, gradients,
    /// outputs and logits.
    func testLifetimesAreWhatTheLayersDo() throws {
        for (name, model) in configurations {
            var c = TrainingConfiguration()
            c.model = model
            c.workspaceBound = 300
            for k in 0..<model.modules {
                for training in [true, false] {
                    let phase = training ? ExecutionPlan.trainingPhase(c, module: k, batch: 6) : ExecutionPlan.streamingPhase(c, module: k, batch: 6)
                    let lifetimes = try XCTUnwrap(phase.lifetimes(configuration: model))
                    let reference = try step(model, module: k, phase: phase, lifetimes: lifetimes, poison: nil)
                    for poison in [Float.nan, 1e20] {
                        let poisoned = try step(model, module: k, phase: phase, lifetimes: lifetimes, poison: poison)
                        XCTAssertEqual(poisoned.count, reference.count)
                        let same = zip(poisoned, reference).allSatisfy { $0.bitPattern == $1.bitPattern }
                        XCTAssertTrue(same, "\(name), module \(k + 1), training \(training), poison \(poison): a tensor is read outside its lifetime")
                    }
                }
            }
        }
    }

    /// One training step (or streaming forward) of module k; with `poison`, the dead parts of the
    /// buffers are overwritten as each operation starts. Returns the loss, gradients (or outputs
    /// and logits).
    func step(_ model: ModelConfiguration, module k: Int, phase: ModulePhase, lifetimes: PhaseLifetimes, poison: Float?) throws -> [Float] {
        let ledger = MemoryLedger()
        let module = try ResNetModule(configuration: model, index: k, ledger: ledger)
        Initialization.initialize(module.parameters, gain: 1, seed: 5, module: k)
        try module.prepare(phase)
        let batch = phase.options.batch
        var generator = SeededGenerator(seed: 9)
        for i in 0..<(batch * phase.inputShapeValues) { module.inputBuffer[i] = Float(generator.nextNormal()) }
        for i in 0..<batch { module.labelsBuffer[i] = Int32(i % model.classes) }
        // Where each tensor lives in today's slots: its own slot, or a prefix of a shared one.
        let gradientLayers = lifetimes.tensors.filter { $0.tag.hasPrefix("grad.in.") }.map(\.tag)
        // Backward visits the layers last to first; the ping-pong buffers alternate from grad.a.
        let order = lifetimes.operations.compactMap { op -> String? in
            guard op.hasSuffix(".backward") else { return nil }
            let layer = String(op.dropLast(".backward".count))
            let tag = "grad.in." + (layer.hasSuffix(".unit1") ? String(layer.dropLast(".unit1".count)) : layer)
            return gradientLayers.contains(tag) ? tag : nil
        }
        var home: [String: String] = [:]
        for (i, tag) in Set(order).sorted(by: { order.firstIndex(of: $0)! < order.firstIndex(of: $1)! }).enumerated() {
            home[tag] = i % 2 == 0 ? "grad.a" : "grad.b"
        }
        for tensor in lifetimes.tensors {
            if home[tensor.tag] == nil {
                home[tensor.tag] = tensor.tag.hasSuffix(".dResidual") || (phase.options.training && tensor.tag.hasSuffix(".head.conv"))
                    ? "grad.scratch0" : tensor.tag
            }
        }
        let slots = Set(home.values)
        if let poison {
            module.operationObserver = { op in
                for slot in slots {
                    guard let buffer = module.arenaSlot(slot) else { continue }
                    let held = lifetimes.tensors.filter { home[$0.tag] == slot && $0.isLive(at: op) }.map(\.bytes).max() ?? 0
                    let from = held / 4
                    if from < buffer.count { (buffer.data + from).update(repeating: poison, count: buffer.count - from) }
                }
            }
        }
        var result: [Float] = []
        if phase.options.training {
            let metrics = module.trainStep(input: module.inputBuffer, labels: module.labelsBuffer, batch: batch,
                                           transportWeight: 0.3, labelSmoothing: 0)
            result = [Float(metrics.taskLoss), Float(metrics.kineticEnergy)]
            for parameter in module.parameters.trainable { result += parameter.gradient!.toArray() }
        } else {
            module.forward(module.inputBuffer, batch: batch, training: false)
            result = Array(UnsafeBufferPointer(start: module.output, count: batch * module.outputCount))
                + Array(UnsafeBufferPointer(start: module.logits!, count: batch * model.classes))
        }
        module.operationObserver = nil
        return withExtendedLifetime(module) { result }
    }
}

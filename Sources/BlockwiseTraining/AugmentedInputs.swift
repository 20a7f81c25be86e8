import BlockwiseData
import BlockwiseKernels

/// `--augmented-inputs recompute`: module k's training inputs, computed per micro-batch from the
/// augmented images by the frozen modules 0..k-1, one at a time, weights only (read from the
/// journal, that is the store, each time; from the trainer's snapshots without one).
///
/// - Memory: two activation buffers `recompute.a`, `recompute.b` [capacity x the largest of levels
///   0..k-1] and one frozen module (its parameters and its evaluation arena, no input buffer of
///   its own) on top of the trained module: ``ExecutionPlan/recomputeSlots(_:module:batch:)``.
final class FrozenChain {
    let trainer: Trainer
    let module: Int
    let lap: Int
    let images: SampleSource
    let buffers: Arena
    let capacity: Int

    init(trainer: Trainer, module k: Int, lap: Int, images: SampleSource, capacity: Int) throws {
        self.trainer = trainer; module = k; self.lap = lap; self.images = images; self.capacity = capacity
        buffers = try Arena(ExecutionPlan.recomputeSlots(trainer.configuration, module: k, batch: capacity), ledger: trainer.ledger)
    }

    /// Fills `input` [n, level k] and `labels` with module k's inputs for the training samples
    /// `indices`: their images augmented (drawing from `generator`) and passed through modules 0..k-1.
    func fill(indices: ArraySlice<Int>, into input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
              generator: inout SeededGenerator) throws {
        let n = indices.count, model = trainer.configuration.model
        let a = buffers["recompute.a"].data
        try images.fill(indices: indices, into: a, labels: labels)
        let shape = model.moduleInputShape(0)
        trainer.configuration.augment!.apply(a, batch: n, channels: shape[0], height: shape[1], width: shape[2], generator: &generator)
        var current = a
        for j in 0..<module {
            let frozen = try ResNetModule(configuration: model, index: j, ledger: trainer.ledger)
            try frozen.parameters.loadChecked(try trainer.frozenParameters(module: j, lap: lap), module: j, what: "frozen parameters")
            try frozen.prepare(ExecutionPlan.frozenPhase(trainer.configuration, module: j, batch: capacity))
            frozen.forward(current, batch: n, training: false)
            let target = j == module - 1 ? input : (current == a ? buffers["recompute.b"].data : a)
            target.update(from: frozen.output, count: n * frozen.outputCount)
            frozen.release()
            current = target
        }
    }
}

extension Trainer {
    /// Module j's trained parameters of `lap`, as a frozen module reads them: from the journal
    /// (the store, counted as storage reads), else from the snapshots of this process.
    func frozenParameters(module j: Int, lap: Int) throws -> [String: [Float]] {
        if let journal, let values = try journal.frozenParameters(module: j, lap: lap) { return values }
        guard let values = snapshots[j] else { throw TrainingError.incompleteCheckpoint(module: j, what: "frozen parameters", problems: ["not trained yet"]) }
        return values
    }
}

extension Trainer {
    /// Module k's inputs for the training samples `indices` as `--augmented-inputs recompute`
    /// computes them after a run (frozen modules from the journal or the snapshots), augmenting
    /// with `generator`: for checking them against a chain that keeps every module resident.
    public func recomputedInputs(module k: Int, lap: Int = 0, indices: [Int], images: SampleSource,
                                 generator: inout SeededGenerator) throws -> [Float] {
        let ledger = MemoryLedger()
        let chain = try FrozenChain(trainer: self, module: k, lap: lap, images: images, capacity: indices.count)
        let input = try Tensor([indices.count] + configuration.model.moduleInputShape(k), category: .ioBuffers, tag: "input", ledger: ledger)
        let labels = try Tensor([indices.count], category: .ioBuffers, tag: "labels", ledger: ledger)
        // (The tensors outlive the raw pointers taken from them: Swift may free an object after its last use.)
        try withExtendedLifetime((input, labels)) {
            try chain.fill(indices: indices[...], into: input.data,
                           labels: UnsafeMutableRawPointer(labels.data).assumingMemoryBound(to: Int32.self), generator: &generator)
        }
        return input.toArray()
    }
}

/// `--augmented-inputs pool=N`, level 1: the training images as N augmented views, view-major
/// (row v * samples + i is view v of sample i). Each view of each sample draws its shift and flip
/// from its own seeded stream, so a row is the same whatever batch reads it, on resume too.
/// No memory of its own: the images are written into the caller's buffer and augmented there.
public final class AugmentedViews: SampleSource {
    let images: SampleSource
    let views: Int
    let augmentation: Augmentation
    let seed: UInt64

    public init(images: SampleSource, views: Int, augmentation: Augmentation, seed: UInt64) {
        self.images = images; self.views = views; self.augmentation = augmentation; self.seed = seed
    }

    public var count: Int { views * images.count }
    public var sampleShape: [Int] { images.sampleShape }

    public func fill(indices: ArraySlice<Int>, into values: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        let samples = images.count
        try images.fill(indices: indices.map { $0 % samples }[...], into: values, labels: labels)
        let shape = sampleShape, size = shape.reduce(1, *)
        for (row, index) in indices.enumerated() {
            var generator = Self.generator(seed: seed, view: index / samples, sample: index % samples)
            augmentation.apply(values + row * size, batch: 1, channels: shape[0], height: shape[1], width: shape[2], generator: &generator)
        }
    }

    /// The stream of view `view` of sample `sample`.
    static func generator(seed: UInt64, view: Int, sample: Int) -> SeededGenerator {
        SeededGenerator.stream(seed: seed, "augment-pool-view\(view)-sample\(sample)")
    }
}

extension Trainer {
    /// Module k's training rows for the samples `indices` of an epoch: the samples themselves, or
    /// with `pool=N` (k >= 1) one view of each, drawn from the epoch's augmentation stream.
    func trainingRows(module k: Int, indices: ArraySlice<Int>, samples: Int, generator: inout SeededGenerator) -> ArraySlice<Int> {
        let views = k > 0 ? configuration.poolViews : 1
        guard views > 1 else { return indices }
        return indices.map { Int(generator.next() % UInt64(views)) * samples + $0 }[...]
    }
}

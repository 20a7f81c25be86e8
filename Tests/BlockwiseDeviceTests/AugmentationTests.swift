import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation
import XCTest

/// Issue 15: the augmentation itself, and `recompute`'s inputs against a resident chain.
final class AugmentationTests: XCTestCase {
    func testShiftAndFlipByHand() {
        // One 1x3x3 image 1..9, shifted by (dy, dx) and flipped as the generator draws.
        var generator = SeededGenerator(seed: 7)
        var probe = generator
        let span = UInt64(3)
        let dy = Int(probe.next() % span) - 1, dx = Int(probe.next() % span) - 1, flip = probe.next() & 1 == 1
        var image: [Float] = (1...9).map(Float.init)
        image.withUnsafeMutableBufferPointer { Augmentation(crop: 1, flip: true).apply($0.baseAddress!, batch: 1, channels: 1, height: 3, width: 3, generator: &generator) }
        var expected = [Float](repeating: 0, count: 9)
        for y in 0..<3 { for x in 0..<3 {
            let sy = y + dy, sx = x + dx
            let value: Float = sy >= 0 && sy < 3 && sx >= 0 && sx < 3 ? Float(sy * 3 + sx + 1) : 0
            expected[y * 3 + (flip ? 2 - x : x)] = value
        } }
        XCTAssertEqual(image, expected, "dy \(dy) dx \(dx) flip \(flip)")
        XCTAssertEqual(try Augmentation.parse("crop=4,flip"), Augmentation(crop: 4, flip: true))
        XCTAssertNil(try Augmentation.parse("none"))
        for bad in ["crop=-1", "crop=x", "rotate", "", "crop=2,,flip", "flip,flip", "crop=2,flip,", "crop=2,crop=3", " flip", "crop=+2",
                    "crop=", "none,flip", ",", "crop=\u{0664}"] {
            XCTAssertThrowsError(try Augmentation.parse(bad), bad)
        }
        XCTAssertEqual(try Augmentation.parse("flip,crop=2"), Augmentation(crop: 2, flip: true))
        XCTAssertEqual(Augmentation(crop: 99).problems(height: 28, width: 28).count, 1)
        XCTAssertThrowsError(try AugmentedInputs.parse("pool=0"))
        XCTAssertThrowsError(try AugmentedInputs.parse("pool=65"))
        XCTAssertEqual(try AugmentedInputs.parse("pool=3"), .pool(views: 3))
    }

    /// `recompute` gives module 3 exactly what modules 1 and 2, both resident, compute on the same
    /// augmented images.
    func testRecomputedInputsEqualAResidentChain() throws {
        let (all, allTest) = try FashionMNIST.load()
        let (train, test) = (try all.balancedSubset(size: .count(120), seed: 3), try allTest.balancedSubset(size: .count(60), seed: 3))
        var c = TrainingConfiguration()
        c.model = ModelConfiguration(width: 4, modules: 3, blocksPerModule: 1, encoderDownsamplings: 1, head: .oneCNN)
        c.batchSize = 16
        c.epochsBase = 1
        c.augment = Augmentation(crop: 3, flip: true)
        c.augmentedInputs = .recompute
        let trainer = try Trainer(configuration: c, ledger: MemoryLedger())
        _ = try trainer.run(train: train, test: test)
        let indices = Array(5..<15)
        var generator = SeededGenerator.stream(seed: 1, "check")
        let recomputed = try trainer.recomputedInputs(module: 2, indices: indices, images: DatasetSource(train), generator: &generator)
        // By hand: the same images, the same draws, modules 1 and 2 resident at once.
        let ledger = MemoryLedger()
        let modules = try (0..<2).map { k -> ResNetModule in
            let module = try ResNetModule(configuration: c.model, index: k, ledger: ledger)
            module.parameters.load(trainer.snapshots[k]!)
            try module.prepare(ExecutionPlan.frozenPhase(c, module: k, batch: indices.count))
            return module
        }
        var images = [Float](repeating: 0, count: indices.count * 784)
        var labels = [Int32](repeating: 0, count: indices.count)
        try DatasetSource(train).fill(indices: indices[...], into: &images, labels: &labels)
        var again = SeededGenerator.stream(seed: 1, "check")
        images.withUnsafeMutableBufferPointer { c.augment!.apply($0.baseAddress!, batch: indices.count, channels: 1, height: 28, width: 28, generator: &again) }
        // (The modules must outlive the read of their output: Swift may free an object after its last use.)
        let expected = withExtendedLifetime(modules) { () -> [Float] in
            images.withUnsafeBufferPointer { modules[0].forward($0.baseAddress!, batch: indices.count, training: false) }
            modules[1].forward(modules[0].output, batch: indices.count, training: false)
            return Array(UnsafeBufferPointer(start: modules[1].output, count: indices.count * modules[1].outputCount))
        }
        XCTAssertEqual(recomputed, expected)
        XCTAssertGreaterThan(Set(recomputed).count, 10, "not a constant")
    }
}

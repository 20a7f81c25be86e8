import BlockwiseData
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation
import XCTest

/// Sequential training through the store: interrupted and resumed runs end like uninterrupted ones.
final class ResumeTests: XCTestCase {
    struct Interrupted: Error {}

    func realData() throws -> (train: Dataset, test: Dataset) { try TestData.fashion() }

    func configuration(_ procedure: Procedure = .sequential, tau: TauSchedule = .multipliers(lambda0: 1, h: 1, s: 4)) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.model = ModelConfiguration(width: 4, modules: 3, encoderDownsamplings: 1, head: .oneCNN)
        c.procedure = procedure
        c.batchSize = 50
        c.epochsBase = 3
        c.laps = 2
        c.seed = 11
        c.tau = tau
        return c
    }

    /// Runs through a store; `stopAfterBatches` throws from the observer after that many batches.
    func run(_ path: String, _ c: TrainingConfiguration, stopAfterBatches: Int? = nil) throws -> TrainingResult {
        let (train, test) = try realData()
        let ledger = MemoryLedger()
        let store = try FeatureStore(path: path, encoding: .fp16, ledger: ledger)
        _ = try store.begin(.init(configuration: c, data: .init(train: train, test: test), encoding: .fp16), fresh: false)
        let trainer = try Trainer(configuration: c, ledger: ledger, cache: store)
        trainer.journal = store
        var batches = 0
        var baselines: [Int] = []
        trainer.observer = { event in
            if case .batch = event {
                batches += 1
                if let stop = stopAfterBatches, batches >= stop { throw Interrupted() }
            }
            if case .moduleEvaluated = event {
                // After each module: only the store's buffers and engine remain.
                baselines.append(ledger.live[.parameters] + ledger.live[.gradients] + ledger.live[.optimizerState]
                                 + ledger.live[.savedActivations] + ledger.live[.workspace])
            }
        }
        let result = try trainer.run(train: train, test: test)
        XCTAssertTrue(baselines.allSatisfy { $0 == 0 }, "the ledger returned to its baseline after every module: \(baselines)")
        return result
    }

    func interruptAndResume(_ procedure: Procedure, tau: TauSchedule = .multipliers(lambda0: 1, h: 1, s: 4), stops: [Int]) throws {
        let c = configuration(procedure, tau: tau)
        let reference = try run(NSTemporaryDirectory() + "ref-\(UUID().uuidString).sqlite", c)
        let path = NSTemporaryDirectory() + "resume-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for stop in stops {
            XCTAssertThrowsError(try run(path, c, stopAfterBatches: stop))
        }
        let resumed = try run(path, c)
        XCTAssertEqual(resumed.modules.map(\.testAccuracy), reference.modules.map(\.testAccuracy))
        XCTAssertEqual(resumed.modules.map(\.kineticEnergy), reference.modules.map(\.kineticEnergy))
        XCTAssertEqual(resumed.epochs.map(\.taskLoss), reference.epochs.map(\.taskLoss))
        print("\(procedure.rawValue): resumed after interruptions at batches \(stops): test accuracies \(resumed.modules.map(\.testAccuracy)) = uninterrupted")
    }

    /// Interrupted mid-epoch, mid-module and after completed modules, then resumed.
    func testSequentialResumeReproducesTheUninterruptedRun() throws {
        try interruptAndResume(.sequential, stops: [4, 9, 20])
    }

    /// Killed in lap 2 while module 2 was rewriting its output level (marked incomplete): the
    /// resumed run must not need that level before module 2 has rewritten it.
    func testMultilapResumeWithAHalfRewrittenLevel() throws {
        let c = configuration(.multilap)
        let reference = try run(NSTemporaryDirectory() + "ref-\(UUID().uuidString).sqlite", c)
        let path = NSTemporaryDirectory() + "resume-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        // 6 batches per epoch, 2 epochs per lap: lap 2's module 2 starts after 3 x 12 + 12 batches.
        XCTAssertThrowsError(try run(path, c, stopAfterBatches: 52))
        try Database(path: path).execute("UPDATE levels SET complete = 0 WHERE level = 2")
        let resumed = try run(path, c)
        XCTAssertEqual(resumed.modules.map(\.testAccuracy), reference.modules.map(\.testAccuracy))
    }

    func testMultilapResumeReproducesTheUninterruptedRun() throws {
        try interruptAndResume(.multilap, tau: .off, stops: [5, 17])
    }

    /// Runs `c` uninterrupted, then at `path` stopped after 4 and after 25 batches and resumed:
    /// the resumed run's losses and accuracies must be the uninterrupted run's, which it returns.
    func interruptedTwiceAndResumed(_ c: TrainingConfiguration, at path: String) throws -> TrainingResult {
        let reference = try run(NSTemporaryDirectory() + "ref-\(UUID().uuidString).sqlite", c)
        XCTAssertThrowsError(try run(path, c, stopAfterBatches: 4))
        XCTAssertThrowsError(try run(path, c, stopAfterBatches: 25))
        let resumed = try run(path, c)
        XCTAssertEqual(resumed.epochs.map(\.taskLoss), reference.epochs.map(\.taskLoss))
        XCTAssertEqual(resumed.modules.map(\.testAccuracy), reference.modules.map(\.testAccuracy))
        return reference
    }

    /// Augmented runs (issue 15) resume exactly too: each epoch draws its shifts and flips from its
    /// own seeded stream, and `recompute` reads the frozen modules' weights from the store.
    func testAugmentedResumeReproducesTheUninterruptedRun() throws {
        var c = configuration(.sequential)
        c.augment = Augmentation(crop: 2, flip: true)
        c.augmentedInputs = .recompute
        let path = NSTemporaryDirectory() + "augment-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reference = try interruptedTwiceAndResumed(c, at: path)
        // Augmentation changes training (not the same run as without it).
        let plain = try run(NSTemporaryDirectory() + "plain-\(UUID().uuidString).sqlite", configuration(.sequential))
        XCTAssertNotEqual(plain.epochs.map(\.taskLoss), reference.epochs.map(\.taskLoss))
    }

    /// `pool=N` (issue 15) resumes exactly too (each view of each sample has its own stream, each
    /// epoch's choice of views its own), and its store holds N views of every training sample:
    /// view v of level 1 is module 1 applied to that view of the image, view v of level 2 is
    /// module 2 applied to view v of level 1; the store verifies clean.
    func testPoolStoresNViewsOfEverySampleAndResumes() throws {
        var c = configuration(.sequential)
        c.augment = Augmentation(crop: 2, flip: true)
        c.augmentedInputs = .pool(views: 3)
        let path = NSTemporaryDirectory() + "pool-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try interruptedTwiceAndResumed(c, at: path)

        let (train, test) = try realData()
        let store = try FeatureStore(path: path, encoding: .fp16)
        XCTAssertTrue(try StoreVerifier.verify(store).isClean)
        let samples = train.count, views = 3
        for level in 1...c.model.modules {
            XCTAssertEqual(try store.source(level: level, split: .train).count, views * samples, "level \(level) train: 3 views")
            XCTAssertEqual(try store.source(level: level, split: .test).count, test.count, "level \(level) test: one row per sample")
        }
        XCTAssertEqual(try store.source(level: 0, split: .train).count, samples, "the images themselves are not pooled")
        // Rows 2, 2 + n and 2 + 2n: three views of sample 2, by hand.
        let rows = [2, 2 + samples, 2 + 2 * samples]
        let ledger = MemoryLedger()
        let modules = try (0..<2).map { k -> ResNetModule in
            let module = try ResNetModule(configuration: c.model, index: k, ledger: ledger)
            module.parameters.load(try XCTUnwrap(store.completedModule(k, lap: 0)).parameters)
            try module.prepare(ExecutionPlan.streamingPhase(c, module: k, batch: rows.count))
            return module
        }
        var images = [Float](repeating: 0, count: rows.count * 784)
        var labels = [Int32](repeating: 0, count: rows.count)
        try AugmentedViews(images: DatasetSource(train), views: views, augmentation: c.augment!, seed: c.seed)
            .fill(indices: rows[...], into: &images, labels: &labels)
        XCTAssertNotEqual(images[0..<784], images[784..<1568], "two views of one sample differ")
        func stored(_ level: Int) throws -> [Float] {
            let size = c.model.moduleOutputShape(level - 1).reduce(1, *)
            var values = [Float](repeating: 0, count: rows.count * size)
            var storedLabels = [Int32](repeating: 0, count: rows.count)
            try store.source(level: level, split: .train).fill(indices: rows[...], into: &values, labels: &storedLabels)
            XCTAssertEqual(storedLabels, labels)
            return values
        }
        // Module 2's input is level 1 as stored (fp16), as in the run.
        let level1 = try stored(1), level2 = try stored(2)
        let expected = withExtendedLifetime(modules) { () -> ([Float], [Float]) in
            images.withUnsafeBufferPointer { modules[0].forward($0.baseAddress!, batch: rows.count, training: false) }
            let first = Array(UnsafeBufferPointer(start: modules[0].output, count: rows.count * modules[0].outputCount))
            level1.withUnsafeBufferPointer { modules[1].forward($0.baseAddress!, batch: rows.count, training: false) }
            return (first, Array(UnsafeBufferPointer(start: modules[1].output, count: rows.count * modules[1].outputCount)))
        }
        for (name, got, want) in [("level 1", level1, expected.0), ("level 2", level2, expected.1)] {
            XCTAssertEqual(got.count, want.count)
            let worst = zip(got, want).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-3, "\(name): the stored views are the modules' outputs of those views (fp16)")
        }
    }

    /// Checkpoints are keyed by lap (format 2): lap 1's parameters of a module survive lap 2
    /// (format 1 overwrote them), and `cache verify` checks every lap's.
    func testMultilapKeepsEveryLapsParameters() throws {
        let c = configuration(.multilap)
        let path = NSTemporaryDirectory() + "laps-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try run(path, c)
        let store = try FeatureStore(path: path, encoding: .fp16)
        for k in 0..<c.model.modules {
            let specs = ResNetModule.parameterSpecs(configuration: c.model, index: k)
            let first = try XCTUnwrap(store.completedModule(k, lap: 0)), second = try XCTUnwrap(store.completedModule(k, lap: 1))
            XCTAssertEqual(ParameterStore.problems(loading: first.parameters, specs: specs), [], "module \(k + 1) lap 1")
            XCTAssertEqual(ParameterStore.problems(loading: second.parameters, specs: specs), [], "module \(k + 1) lap 2")
            XCTAssertNotEqual(first.parameters, second.parameters, "module \(k + 1): lap 2 trained on from lap 1")
        }
        let report = try StoreVerifier.verify(store)
        XCTAssertTrue(report.isClean, "\(report.problems)")
        XCTAssertEqual(report.checkpointTensors, 2 * (0..<c.model.modules).reduce(0) {
            $0 + ResNetModule.parameterSpecs(configuration: c.model, index: $1).count
        }, "every lap's values, no momentum left once the modules completed")
    }

    /// A store written by format 1 (one set of checkpoints per module: its latest lap's) and
    /// interrupted in lap 2, after module 2's first epoch checkpoint of that lap: readers read it
    /// as it is, the next writer migrates it to format 2, and the resumed run ends exactly like an
    /// uninterrupted one.
    func testAFormat1StoreIsMigratedAndResumes() throws {
        let c = configuration(.multilap)
        let reference = try run(NSTemporaryDirectory() + "ref-\(UUID().uuidString).sqlite", c)
        let path = NSTemporaryDirectory() + "format1-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        // 6 batches per epoch, 2 epochs per lap: lap 2's module 2 starts after 48 batches and
        // checkpoints its first epoch at 54.
        XCTAssertThrowsError(try run(path, c, stopAfterBatches: 58))
        // What format 1 held: each module's tensors of its latest lap only, keyed (module, name, kind).
        try Database(path: path).execute("""
            CREATE TABLE checkpoints_v1 (module INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
                shape TEXT NOT NULL, checksum INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (module, name, kind));
            INSERT INTO checkpoints_v1 SELECT module, name, kind, shape, checksum, data FROM checkpoints c
                WHERE lap = (SELECT max(lap) FROM modules m WHERE m.module = c.module);
            DROP TABLE checkpoints; ALTER TABLE checkpoints_v1 RENAME TO checkpoints; PRAGMA user_version = 1;
            """)
        do {
            let reader = try FeatureStore(readingAt: path)
            XCTAssertEqual(reader.schemaVersion, 1)
            let report = try StoreVerifier.verify(reader)
            XCTAssertTrue(report.isClean, "a format-1 store verifies as it is: \(report.problems)")
        }
        let resumed = try run(path, c)
        XCTAssertEqual(resumed.modules.map(\.testAccuracy), reference.modules.map(\.testAccuracy))
        XCTAssertEqual(resumed.epochs.map(\.taskLoss), reference.epochs.map(\.taskLoss))
        let migrated = try FeatureStore(readingAt: path)
        XCTAssertEqual(migrated.schemaVersion, FeatureStore.formatVersion)
        let report = try StoreVerifier.verify(migrated)
        XCTAssertTrue(report.isClean, "\(report.problems)")
    }
}

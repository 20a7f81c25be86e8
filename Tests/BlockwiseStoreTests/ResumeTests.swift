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
}

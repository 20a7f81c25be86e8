import BlockwiseData
import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation
import XCTest

/// The end-to-end memory techniques (issue 14): the same parameters as plain e2e, bit for bit;
/// the planned peak, work and paged bytes equal to what the run counts.
final class EndToEndTechniqueTests: XCTestCase {
    func testRecomputeAndPagingTrainExactlyLikePlainEndToEnd() throws {
        let (all, allTest) = try FashionMNIST.load()
        let (train, test) = (try all.balancedSubset(size: .count(120), seed: 3), try allTest.balancedSubset(size: .count(60), seed: 3))
        var plain = TrainingConfiguration()
        plain.model = ModelConfiguration(width: 4, modules: 3, blocksPerModule: 1, encoderDownsamplings: 1, head: .oneCNN)
        plain.procedure = .e2e
        plain.batchSize = 16
        plain.epochsBase = 2
        plain.seed = 5
        func run(_ technique: EndToEndMemory?) throws -> (result: TrainingResult, parameters: [Int: [String: [Float]]], ledger: MemoryLedger, store: FeatureStore?) {
            var c = plain
            c.endToEndMemory = technique
            let ledger = MemoryLedger()
            var store: FeatureStore?
            if technique?.pages == true {
                let path = NSTemporaryDirectory() + "e2e-\(UUID().uuidString).sqlite"
                store = try FeatureStore(path: path, ledger: ledger, cacheKiB: 64)
                _ = try store!.begin(.init(configuration: c, data: .init(train: train, test: test), encoding: .fp32), fresh: true)
            }
            let trainer = try Trainer(configuration: c, ledger: ledger, cache: store)
            trainer.pager = store
            let result = try trainer.run(train: train, test: test)
            return (result, trainer.snapshots, ledger, store)
        }
        let reference = try run(nil)
        XCTAssertEqual(reference.parameters.count, 3)
        for technique in EndToEndMemory.allCases {
            var c = plain
            c.endToEndMemory = technique
            let (result, parameters, ledger, store) = try run(technique)
            let name = technique.rawValue
            // Bit for bit: every parameter (running statistics included), every epoch's loss, the accuracy.
            XCTAssertEqual(parameters, reference.parameters, "\(name): parameters")
            XCTAssertEqual(result.epochs.map(\.taskLoss), reference.result.epochs.map(\.taskLoss), name)
            XCTAssertEqual(result.epochs.map(\.kineticEnergy), reference.result.epochs.map(\.kineticEnergy), name)
            XCTAssertEqual(result.modules.map(\.testAccuracy), reference.result.modules.map(\.testAccuracy), name)
            // The plan: peak (SQLite's engine within its bound), work by class, paged bytes and operations.
            let evaluation = try XCTUnwrap(result.modules.last)
            let planned = BudgetResolver.residentPlan(c)
            XCTAssertEqual(ledger.highWater - ledger.highWaterBreakdown[.storeEngine], planned.total, "\(name): the trainer's peak")
            if let store {
                XCTAssertLessThanOrEqual(ledger.highWaterBreakdown[.storeEngine], RunPlanner.storeEngineBound(cacheBytes: 64 * 1024), name)
                XCTAssertGreaterThan(store.bytesWritten, 0, name)
            }
            XCTAssertLessThan(planned.total, BudgetResolver.residentPlan(plain).total, "\(name) holds less than plain e2e")
            XCTAssertEqual(evaluation.work, RunPlanner.residentWork(c, trainCount: train.count, testCount: test.count), "\(name): work by class")
            let paging = RunPlanner.pagingTraffic(c, trainCount: train.count, testCount: test.count)
            XCTAssertEqual(evaluation.storeBytesWritten, paging.storeBytesWritten, "\(name): bytes paged out")
            XCTAssertEqual(evaluation.storeBytesRead, paging.storeBytesRead, "\(name): bytes paged in")
            XCTAssertEqual(evaluation.storeOperations, paging.storeOperations, "\(name): storage operations")
            if technique.pages {
                let measured = try XCTUnwrap(evaluation.storeFileBytesWritten)
                let ratio = Double(measured) / Double(paging.storeFileBytesWritten)
                XCTAssertTrue((0.5...2.0).contains(ratio), "\(name): SQLite wrote \(measured) B, planned \(paging.storeFileBytesWritten) B")
                print("\(name): SQLite wrote \(measured) B for \(paging.storeBytesWritten) B of pages (planned \(paging.storeFileBytesWritten) B)")
                try? FileManager.default.removeItem(atPath: store!.path)
            }
            print("\(name): peak \(planned.total) B against plain e2e's \(BudgetResolver.residentPlan(plain).total) B; parameters identical")
        }
    }
}

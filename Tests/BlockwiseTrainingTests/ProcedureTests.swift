import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import XCTest

/// Small real runs: 512 Fashion-MNIST training samples, 1000 test samples, a 2-module model.
final class ProcedureTests: XCTestCase {
    nonisolated(unsafe) static var data: (train: Dataset, test: Dataset)?

    func realData() throws -> (train: Dataset, test: Dataset) {
        if let data = Self.data { return data }
        let (train, test) = try FashionMNIST.load()
        let data = (try train.balancedSubset(size: .count(512), seed: 1), try test.balancedSubset(size: .count(1000), seed: 1))
        Self.data = data
        return data
    }

    func configuration(_ procedure: Procedure, tau: TauSchedule = .doubled(tau: 1)) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.model = ModelConfiguration(width: 8, modules: 2, blocksPerModule: 1, encoderDownsamplings: 1, head: .oneCNN)
        c.procedure = procedure
        c.tau = tau
        c.batchSize = 64
        c.epochsBase = 3
        c.laps = 2
        c.seed = 3
        c.optimizer.learningRate = 0.05
        return c
    }

    func run(_ c: TrainingConfiguration) throws -> TrainingResult {
        let (train, test) = try realData()
        let ledger = MemoryLedger()
        let result = try Trainer(configuration: c, ledger: ledger).run(train: train, test: test)
        XCTAssertEqual(ledger.liveBytes, 0, "everything was released")
        return result
    }

    func testEveryProcedureBeatsChance() throws {
        for procedure in Procedure.allCases {
            let result = try run(configuration(procedure))
            XCTAssertEqual(result.modules.count, procedure == .e2e ? 1 : 2, "\(procedure)")
            let last = try XCTUnwrap(result.last)
            print("procedure \(procedure.rawValue): test accuracy per module \(result.modules.map { String(format: "%.1f%%", $0.testAccuracy * 100) })")
            XCTAssertGreaterThan(last.testAccuracy, 0.3, "\(procedure) should beat chance (10%) clearly")
            XCTAssertFalse(result.epochs.isEmpty)
        }
    }

    func testSameSeedGivesIdenticalMetrics() throws {
        let a = try run(configuration(.sequential))
        let b = try run(configuration(.sequential))
        XCTAssertEqual(a.epochs.map(\.taskLoss), b.epochs.map(\.taskLoss))
        XCTAssertEqual(a.epochs.map(\.kineticEnergy), b.epochs.map(\.kineticEnergy))
        XCTAssertEqual(a.modules.map(\.testAccuracy), b.modules.map(\.testAccuracy))
        var other = configuration(.sequential)
        other.seed = 4
        XCTAssertNotEqual(try run(other).epochs.map(\.taskLoss), a.epochs.map(\.taskLoss))
    }

    /// The regulariser's property: a smaller tau (a stronger transport penalty) leaves the
    /// modules with a smaller kinetic energy after the same training.
    func testSmallerTauGivesSmallerKineticEnergy() throws {
        let strong = try run(configuration(.sequential, tau: .fixed(tau: 0.05)))
        let weak = try run(configuration(.sequential, tau: .fixed(tau: 50)))
        let off = try run(configuration(.sequential, tau: .off))
        for k in 0..<2 {
            print("module \(k): kinetic energy tau 0.05: \(strong.modules[k].kineticEnergy), tau 50: \(weak.modules[k].kineticEnergy), off: \(off.modules[k].kineticEnergy)")
            XCTAssertLessThan(strong.modules[k].kineticEnergy, weak.modules[k].kineticEnergy)
        }
        XCTAssertTrue(off.epochs.allSatisfy { $0.transportWeight == 0 })
    }

    func testMultilapDividesTheEpochs() throws {
        var c = configuration(.multilap)
        c.epochsBase = 4
        c.laps = 2
        let result = try run(c)
        XCTAssertEqual(result.epochs.count, 2 * 2 * 2, "2 laps x 2 modules x 2 epochs")
        XCTAssertEqual(Set(result.epochs.map(\.lap)), [0, 1])
    }
}

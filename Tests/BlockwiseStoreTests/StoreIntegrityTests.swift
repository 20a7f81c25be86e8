import BlockwiseData
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation
import XCTest

/// Issue 17: a damaged store is refused with what is damaged, never trained on; one writer at
/// a time; file-system failures name the store.
final class StoreIntegrityTests: XCTestCase {
    struct Interrupted: Error {}
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "blockwise-integrity-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func realData() throws -> (train: Dataset, test: Dataset) { try TestData.fashion() }

    var configuration: TrainingConfiguration {
        var c = TrainingConfiguration()
        c.model = ModelConfiguration(width: 4, modules: 2, encoderDownsamplings: 1, head: .oneCNN)
        c.batchSize = 50  // 6 batches per epoch
        c.epochsBase = 3
        c.seed = 5
        return c
    }

    /// Trains through the store at `path`, throwing after `stopAfterBatches` batches if given.
    func train(_ path: String, stopAfterBatches: Int? = nil) throws -> TrainingResult {
        let (train, test) = try realData()
        let ledger = MemoryLedger()
        let store = try FeatureStore(path: path, ledger: ledger)
        _ = try store.begin(.init(configuration: configuration, data: .init(train: train, test: test), encoding: .fp32), fresh: false)
        let trainer = try Trainer(configuration: configuration, ledger: ledger, cache: store)
        trainer.journal = store
        var batches = 0
        trainer.observer = { event in
            if case .batch = event, let stop = stopAfterBatches {
                batches += 1
                if batches >= stop { throw Interrupted() }
            }
        }
        return try trainer.run(train: train, test: test)
    }

    func execute(_ path: String, _ sql: String) throws {
        let database = try Database(path: path, create: false)
        try database.execute(sql)
    }

    /// The issue's case: one checkpoint tensor of an interrupted module deleted. The resume used
    /// to continue with that tensor as initialised ("resuming after epoch 1", other accuracies).
    func testAnInterruptedModuleMissingACheckpointTensorIsRefused() throws {
        for (kind, expected) in [("value", "epoch 1 checkpoint of module 1"), ("momentum", "epoch 1 checkpoint momentum of module 1")] {
            let path = directory + "/\(kind).sqlite"
            XCTAssertThrowsError(try train(path, stopAfterBatches: 8))  // epoch 1 of module 1 checkpointed
            try execute(path, "DELETE FROM checkpoints WHERE module = 0 AND name LIKE '%unit2.bn.weight' AND kind = '\(kind)'")
            XCTAssertThrowsError(try train(path)) { error in
                guard case .incompleteCheckpoint(let module, let what, let problems)? = error as? TrainingError else {
                    return XCTFail("\(kind): \(error)")
                }
                XCTAssertEqual(module, 0)
                XCTAssertEqual("the \(what) of module 1", "the " + expected)
                XCTAssertEqual(problems, ["m0.block0.unit2.bn.weight missing"])
            }
            let report = try StoreVerifier.verify(try FeatureStore(readingAt: path))
            XCTAssertFalse(report.isClean)
            XCTAssertTrue(report.problems.contains { $0.contains("unit2.bn.weight (\(kind)) of module 1 lap 1: missing") }, "\(report.problems)")
        }
    }

    func testALevelWithTheWrongRowsIsRefusedBeforeTraining() throws {
        let path = directory + "/levels.sqlite"
        let reference = try train(path)
        XCTAssertEqual(try train(path).modules.map(\.testAccuracy), reference.modules.map(\.testAccuracy), "a whole store resumes")
        for (sql, expected) in [("UPDATE levels SET row_count = 299 WHERE level = 1 AND split = 'train'", "rows 0..<299"),
                                ("DELETE FROM features WHERE level = 2 AND split = 'test' AND row = 150", "199 rows")] {
            let copy = directory + "/copy.sqlite"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            try execute(copy, sql)
            XCTAssertThrowsError(try train(copy)) { error in
                guard case .damaged(_, let what)? = error as? StoreError else { return XCTFail("\(error)") }
                XCTAssertTrue(what.contains(expected), what)
            }
        }
    }

    func testOneWriterAtATimeAndReadersAreNotBlocked() throws {
        let path = directory + "/lock.sqlite"
        var first: FeatureStore? = try FeatureStore(path: path, purpose: "test writer")
        XCTAssertThrowsError(try FeatureStore(path: path)) { error in
            guard case .locked(let locked, let holder)? = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(locked, path)
            XCTAssertTrue(holder.hasPrefix("pid \(getpid()) on host \(ProcessInfo.processInfo.hostName) since "), holder)
            XCTAssertTrue(holder.hasSuffix("(test writer)"), holder)
        }
        XCTAssertThrowsError(try FeatureStore(path: path, replace: true), "--fresh cannot take the store from a writer")
        XCTAssertNoThrow(try FeatureStore(readingAt: path), "readers take no lock")
        XCTAssertNotNil(first)
        first = nil  // released: the next writer gets the lock
        XCTAssertNoThrow(try FeatureStore(path: path))
    }

    func testAFullDiskNamesTheStoreAndLeavesItIntact() throws {
        let path = directory + "/full.sqlite"
        let store = try FeatureStore(path: path)
        try store.beginLevel(0, split: .train, count: 64, shape: [1, 32, 32])
        // SQLite's own limit on the file's pages stands in for a full disk (SQLITE_FULL either way).
        try store.database.execute("PRAGMA max_page_count = \(try store.database.integer("PRAGMA page_count")! + 2)")
        let values = [Float](repeating: 0.5, count: 64 * 1024), labels = [Int32](repeating: 1, count: 64)
        XCTAssertThrowsError(try values.withUnsafeBufferPointer { v in try labels.withUnsafeBufferPointer { l in
            try store.write(level: 0, split: .train, offset: 0, rows: 64, values: v.baseAddress!, labels: l.baseAddress!)
        } }) { error in
            guard case .fileSystem(let named, let problem)? = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(named, path)
            XCTAssertTrue(problem.contains("the disk is full"), problem)
        }
        XCTAssertEqual(try store.database.integer("SELECT count(*) FROM features"), 0, "the failed batch was rolled back")
    }

    /// A writer killed while it created the store leaves a hot journal of a database that had no
    /// pages: the next run rolls it back and creates the store (it used to be refused as
    /// unreadable, by every command, --fresh included).
    func testAStoreKilledWhileBeingCreatedIsCreatedAgain() throws {
        // That state, made as SQLite makes it: a transaction on a new file that spilled pages to
        // it, the file and its hot journal copied before the rollback.
        let writer = directory + "/writer.sqlite", path = directory + "/killed.sqlite"
        let database = try Database(path: writer)
        try database.execute("PRAGMA cache_size = 2; BEGIN; CREATE TABLE t (a BLOB); "
                             + "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) INSERT INTO t SELECT randomblob(2000) FROM c;")
        try FileManager.default.copyItem(atPath: writer, toPath: path)
        try FileManager.default.copyItem(atPath: writer + "-journal", toPath: path + "-journal")
        try database.execute("ROLLBACK")
        XCTAssertGreaterThan(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int, 0)
        XCTAssertEqual(StoreFile.identify(path), .emptyDatabase)
        XCTAssertThrowsError(try FeatureStore(readingAt: path)) { error in
            guard case .notAStore(_, let reason)? = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("empty"), reason)
        }
        let result = try train(path)
        XCTAssertEqual(result.modules.count, 2)
        XCTAssertEqual(StoreFile.identify(path), .blockwise)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + "-journal"))
    }

    func testForeignDatabasesAreRefusedUntouchedAndNeverReplaced() throws {
        let path = directory + "/foreign.sqlite"
        try Database(path: path).execute("CREATE TABLE run (id INTEGER, configuration TEXT); PRAGMA user_version = 1;")
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        for replace in [false, true] {
            XCTAssertThrowsError(try FeatureStore(path: path, replace: replace)) { error in
                guard case .notAStore(_, let reason)? = error as? StoreError else { return XCTFail("\(error)") }
                XCTAssertTrue(reason.contains("another application's SQLite database"), reason)
            }
        }
        XCTAssertThrowsError(try FeatureStore(readingAt: path))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(StoreFile.identify(path), .foreign(reason: "it is another application's SQLite database (tables run)"))
        XCTAssertEqual(StoreFile.identify(directory + "/absent.sqlite"), .absent)
    }
}

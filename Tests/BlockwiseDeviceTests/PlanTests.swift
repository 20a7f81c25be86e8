import BlockwiseData
import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation
import XCTest

/// `plan` predicts what the ledger measures.
final class PlanTests: XCTestCase {
    nonisolated(unsafe) static var data: (train: Dataset, test: Dataset)?

    func realData() throws -> (train: Dataset, test: Dataset) {
        if let data = Self.data { return data }
        let (train, test) = try FashionMNIST.load()
        let data = (try train.balancedSubset(size: .count(120), seed: 3), try test.balancedSubset(size: .count(60), seed: 3))
        Self.data = data
        return data
    }

    func configuration(width: Int, batch: Int, downsample: [Int] = [], head: HeadKind = .oneCNN) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.model = ModelConfiguration(width: width, modules: 3, blocksPerModule: 1, encoderDownsamplings: 1, downsampleAt: downsample, head: head)
        c.batchSize = batch
        c.epochsBase = 1
        c.workspaceBound = 700
        return c
    }

    /// Features in memory: no engine, so the measured peak of every module equals the plan exactly.
    func testPlanEqualsMeasuredPeakExactlyInMemory() throws {
        let (train, test) = try realData()
        for c in [configuration(width: 4, batch: 16), configuration(width: 6, batch: 10, downsample: [1], head: .linear)] {
            let ledger = MemoryLedger()
            let result = try Trainer(configuration: c, ledger: ledger).run(train: train, test: test)
            for module in result.modules {
                let plan = RunPlanner.modulePlan(c, module: module.module, batch: c.batchSize, residence: .memory,
                                                 trainCount: train.count, testCount: test.count)
                XCTAssertEqual(module.peakBytes, plan.peakBytes, "module \(module.module)")
                XCTAssertEqual(module.peakBreakdown, plan.breakdown, "module \(module.module)")
            }
        }
    }

    /// Through the store: what the trainer allocates is exact; SQLite's engine stays under its bound.
    func testPlanMatchesMeasuredPeakThroughTheStoreWithMicroBatches() throws {
        let (train, test) = try realData()
        let base = configuration(width: 4, batch: 24)
        let cacheBytes = 32 * 1024
        let residence = FeatureResidence.store(encoding: .fp16, cacheBytes: cacheBytes)
        // A budget between the batch-1 and the batch-24 needs of module 0.
        let needAt24 = RunPlanner.modulePlan(base, module: 0, batch: 24, residence: residence, trainCount: train.count, testCount: test.count).peakBytes
        let needAt1 = RunPlanner.modulePlan(base, module: 0, batch: 1, residence: residence, trainCount: train.count, testCount: test.count).peakBytes
        let budget = (needAt1 + needAt24) / 2
        XCTAssertThrowsError(try BudgetResolver.resolve(base, budget: budget, fit: .error, residence: residence,
                                                        trainCount: train.count, testCount: test.count)) { error in
            guard let error = error as? ModuleDoesNotFitError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.module, 0)
            XCTAssertEqual(error.budget, budget)
            let largest = RunPlanner.largestBatch(base, module: 0, budget: budget, residence: residence, trainCount: train.count, testCount: test.count)!
            XCTAssertEqual(error.largestBatch, largest)
            XCTAssertLessThanOrEqual(RunPlanner.modulePlan(base, module: 0, batch: largest, residence: residence, trainCount: train.count, testCount: test.count).peakBytes, budget)
            XCTAssertGreaterThan(RunPlanner.modulePlan(base, module: 0, batch: largest + 1, residence: residence, trainCount: train.count, testCount: test.count).peakBytes, budget)
            XCTAssertTrue(error.description.contains("module 1"))
            XCTAssertTrue(error.description.contains("savedActivations"))
        }
        let (c, plans) = try BudgetResolver.resolve(base, budget: budget, fit: .microbatch, residence: residence,
                                                    trainCount: train.count, testCount: test.count)
        XCTAssertLessThan(c.microBatch(module: 0), 24, "module 0 had to shrink its batch")
        XCTAssertEqual(c.batchSize, 24, "the effective batch is kept")
        // `blockwise plan --fit microbatch` reports the plans the runtime resolves; with --fit error
        // the same module is reported as not fitting.
        let planned = PlanReport(configuration: base, trainCount: train.count, testCount: test.count, residence: residence,
                                 budget: budget, profile: nil, encoding: .fp16, fit: .microbatch)
        XCTAssertTrue(planned.fits)
        XCTAssertEqual(planned.modules.map(\.plan.batch), plans.map(\.batch))
        XCTAssertEqual(planned.modules.map(\.plan.peakBytes), plans.map(\.peakBytes))
        XCTAssertEqual(planned.modules[0].microBatch, c.microBatch(module: 0))
        XCTAssertEqual(planned.peakBytes, plans.map(\.peakBytes).max())
        let strict = PlanReport(configuration: base, trainCount: train.count, testCount: test.count, residence: residence,
                                budget: budget, profile: nil, encoding: .fp16, fit: .error)
        XCTAssertFalse(strict.fits)
        XCTAssertNil(strict.modules[0].microBatch)
        XCTAssertEqual(strict.modules[0].largestBatch, c.microBatch(module: 0))
        let path = NSTemporaryDirectory() + "plan-\(UUID().uuidString).sqlite"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = MemoryLedger(budget: budget)
        let store = try FeatureStore(path: path, encoding: .fp16, ledger: ledger, cacheKiB: cacheBytes / 1024)
        try store.reserveRowBuffer(floats: RunPlanner.rowBufferFloats(base, encoding: .fp16))
        let trainer = try Trainer(configuration: c, ledger: ledger, cache: store)
        let result = try trainer.run(train: train, test: test)
        XCTAssertLessThanOrEqual(result.peakBytes, budget, "the budget held")
        for (module, plan) in zip(result.modules, plans) {
            XCTAssertLessThanOrEqual(module.peakBytes, plan.peakBytes, "module \(module.module): measured peak within the plan")
            var trainerPart = module.peakBreakdown
            trainerPart[.storeEngine] = 0
            XCTAssertTrue(trainerPart == plan.trainingPhase || trainerPart == plan.streamingPhase,
                          "module \(module.module): allocations at the peak \(trainerPart) are a planned phase (\(plan.trainingPhase))")
            XCTAssertLessThanOrEqual(module.peakBreakdown[.storeEngine], plan.storeEngineBound)
            print("module \(module.module + 1): micro-batch \(plan.batch), planned \(plan.peakBytes) B (engine bound \(plan.storeEngineBound)), measured \(module.peakBytes) B (engine \(module.peakBreakdown[.storeEngine]))")
        }
    }
}

final class ProfileTests: XCTestCase {
    var directory: String!
    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "profiles-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    var repositoryProfiles: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("profiles").path
    }

    func testBundledProfilesAreValidAndBudgetsFollow() throws {
        let names = DeviceProfile.bundledNames(directory: repositoryProfiles)
        XCTAssertGreaterThanOrEqual(names.count, 8)
        for name in names {
            let profile = try DeviceProfile.load(name, directory: repositoryProfiles)
            XCTAssertEqual(profile.budgetBytes, profile.ramBytes - profile.reservedBytes)
            XCTAssertFalse(profile.sources.isEmpty)
        }
        XCTAssertEqual(try DeviceProfile.load("stm32f746-disco", directory: repositoryProfiles).ramBytes, 320 * 1024)
    }

    /// The profile of version 1 that nrf52840.json was: one rate, no v2 figures.
    func version1(_ mutate: (inout [String: Any]) -> Void = { _ in }) throws -> String {
        try write("v1.json") { object in
            object["schemaVersion"] = 1
            object["computeGflops"] = 0.02
            object["compute"] = nil
            var storage = object["storage"] as! [String: Any]
            for key in ["overlapsCompute", "capacityBytes", "enduranceBytes", "peCycles"] { storage[key] = nil }
            object["storage"] = storage
            object["sources"] = (object["sources"] as! [[String: Any]]).compactMap { entry in
                let field = entry["field"] as! String
                if field == "compute.convolutionGflops" { var copy = entry; copy["field"] = "computeGflops"; return copy }
                return field.hasPrefix("compute.") || ["storage.overlapsCompute", "storage.capacityBytes", "storage.peCycles", "storage.enduranceBytes"].contains(field) ? nil : entry
            }
            mutate(&object)
        }
    }

    /// Version 1 still loads: its one rate serves every class, no bandwidth bound, no overlap, the
    /// storage wait at the active power; its costs are version 1's.
    func testVersion1ProfilesLoadWithTheDocumentedDefaults() throws {
        let profile = try DeviceProfile.load(file: try version1())
        XCTAssertEqual(profile.schemaVersion, 1)
        XCTAssertEqual(profile.rates, DeviceProfile.Compute(convolutionGflops: 0.02, gemmGflops: 0.02, elementwiseGflops: 0.02, memoryGBps: nil))
        XCTAssertNil(profile.storage.overlapsCompute)
        XCTAssertNil(profile.storage.endurance)
        XCTAssertEqual(profile.storageWaitW, profile.power.activeW)
        let work = OperationWork(convolutionFlops: 1_000_000_000, convolutionBytes: 1 << 40, elementwiseFlops: 1_000_000_000, elementwiseBytes: 1 << 40)
        let cost = DeviceCost(profile: profile, work: work, bytesRead: 4_600_000, bytesWritten: 0, operations: 0)
        XCTAssertEqual(cost.computeSeconds, 100, accuracy: 1e-9, "2 GFLOP at 0.02 GFLOP/s; bytes are not bounded")
        XCTAssertEqual(cost.seconds, 100 + cost.storageSeconds, accuracy: 1e-9)
        XCTAssertEqual(cost.energyJoules, cost.seconds * profile.power.activeW, accuracy: 1e-9)
        XCTAssertNil(StorageWear(profile: profile, storeBytes: 1 << 40, bytesWritten: 1 << 40).enduranceShare)
        // A version-1 file with a version-2 field says which version it needs.
        XCTAssertThrowsError(try DeviceProfile.load(file: try version1 {
            $0["compute"] = ["convolutionGflops": 1, "gemmGflops": 1, "elementwiseGflops": 1, "memoryGBps": 1]
        })) {
            XCTAssertTrue("\($0)".contains("'compute'") && "\($0)".contains("schemaVersion"), "\($0)")
        }
    }

    /// A malformed version-2 field is refused, naming it.
    func testMalformedVersion2FieldsNameTheField() throws {
        func storage(_ key: String, _ value: Any?) -> (inout [String: Any]) -> Void {
            { var storage = $0["storage"] as! [String: Any]; storage[key] = value; $0["storage"] = storage }
        }
        func compute(_ key: String, _ value: Any?) -> (inout [String: Any]) -> Void {
            { var compute = $0["compute"] as! [String: Any]; compute[key] = value; $0["compute"] = compute }
        }
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("no bandwidth", compute("memoryGBps", nil), "compute.memoryGBps"),
            ("a rate as text", compute("gemmGflops", "quick"), "compute.gemmGflops"),
            ("an unknown class", compute("tensorCoreGflops", 9), "compute.tensorCoreGflops"),
            ("no compute", { $0["compute"] = nil }, "compute"),
            ("the v1 rate too", { $0["computeGflops"] = 1 }, "computeGflops"),
            ("no overlap", storage("overlapsCompute", nil), "storage.overlapsCompute"),
            ("a capacity as words", storage("capacityBytes", "lots"), "storage.capacityBytes"),
            ("no capacity", storage("capacityBytes", nil), "storage.capacityBytes"),
            ("no endurance", storage("peCycles", nil), "storage.enduranceBytes"),
            ("both endurances", storage("enduranceBytes", "1TB"), "storage.peCycles"),
            ("negative cycles", storage("peCycles", -5), "storage.peCycles"),
            ("no source for a new figure", { $0["sources"] = ($0["sources"] as! [[String: Any]]).filter { $0["field"] as? String != "compute.memoryGBps" } }, "sources"),
        ]
        for (name, mutate, field) in cases {
            let path = try write("\(name).json", mutate)
            XCTAssertThrowsError(try DeviceProfile.load(file: path), name) { error in
                guard case .invalidField(let file, let named, let expected)? = error as? ProfileError else { return XCTFail("\(name): \(error)") }
                XCTAssertEqual(file, path)
                XCTAssertEqual(named, field, "\(name): \(error)")
                if field == "sources" { XCTAssertTrue(expected.contains("compute.memoryGBps"), expected) }
            }
        }
    }

    func testUnknownNameListsTheKnownOnes() {
        XCTAssertThrowsError(try DeviceProfile.load("toaster", directory: repositoryProfiles)) { error in
            XCTAssertTrue("\(error)".contains("rpi-zero-2w"), "\(error)")
        }
    }

    func write(_ name: String, _ mutate: (inout [String: Any]) -> Void) throws -> String {
        let source = try Data(contentsOf: URL(fileURLWithPath: repositoryProfiles + "/nrf52840.json"))
        var object = try JSONSerialization.jsonObject(with: source) as! [String: Any]
        mutate(&object)
        let path = directory + "/" + name
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testMalformedFilesNameTheFileTheFieldAndWhatWasExpected() throws {
        let missing = try write("missing.json") { $0["ramBytes"] = nil }
        XCTAssertThrowsError(try DeviceProfile.load(file: missing)) { error in
            XCTAssertEqual(error as? ProfileError, .invalidField(file: missing, field: "ramBytes", expected: "is missing"))
        }
        let wrongType = try write("type.json") { $0["computeGflops"] = "fast" }
        XCTAssertThrowsError(try DeviceProfile.load(file: wrongType)) { XCTAssertTrue("\($0)".contains("computeGflops"), "\($0)") }
        let nested = try write("nested.json") { var storage = $0["storage"] as! [String: Any]; storage["readMBps"] = nil; $0["storage"] = storage }
        XCTAssertThrowsError(try DeviceProfile.load(file: nested)) { XCTAssertTrue("\($0)".contains("storage.readMBps"), "\($0)") }
        let reserve = try write("reserve.json") { $0["reservedBytes"] = 10_000_000 }
        XCTAssertThrowsError(try DeviceProfile.load(file: reserve)) { error in
            XCTAssertTrue("\(error)".contains("reservedBytes"), "\(error)")
            XCTAssertTrue("\(error)".contains(reserve), "\(error)")
        }
        let version = try write("version.json") { $0["schemaVersion"] = 3 }
        XCTAssertThrowsError(try DeviceProfile.load(file: version)) { XCTAssertTrue("\($0)".contains("schemaVersion"), "\($0)") }
        let path = directory + "/broken.json"
        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try DeviceProfile.load(file: path)) { XCTAssertTrue("\($0)".contains("not valid JSON"), "\($0)") }
        XCTAssertEqual(try DeviceProfile.load(file: try write("ok.json") { $0["name"] = "mine" }).name, "mine")
    }

    /// Issue 17: numbers JSON can hold but a device cannot have are refused naming the field,
    /// never "not valid JSON" and never a time of "inf days".
    func testOutOfRangeNumbersNameTheField() throws {
        let text = try String(contentsOfFile: repositoryProfiles + "/nrf52840.json", encoding: .utf8)
        let cases: [(String, String, String)] = [
            ("ramBytes", "1.5", "ramBytes"), ("ramBytes", "1e30", "ramBytes"), ("ramBytes", "9223372036854775808", "ramBytes"),
            ("ramBytes", "-4", "ramBytes"), ("reservedBytes", "0.5", "reservedBytes"),
            ("writeMBps", "5e-324", "storage.writeMBps"), ("readMBps", "1e300", "storage.readMBps"),
            ("latencyMs", "1e308", "storage.latencyMs"), ("activeW", "1e308", "power.activeW"), ("idleW", "-1", "power.idleW"),
            ("convolutionGflops", "1e-300", "compute.convolutionGflops"), ("memoryGBps", "0", "compute.memoryGBps"),
        ]
        for (key, value, field) in cases {
            guard let range = text.range(of: "\"\(key)\": ") else { return XCTFail("no \(key) in the profile") }
            let end = text[range.upperBound...].firstIndex(where: { $0 == "," || $0 == "\n" || $0 == "}" })!
            let path = directory + "/\(key)-\(value).json"
            try (text[..<range.upperBound] + value + text[end...]).write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try DeviceProfile.load(file: path), "\(key) = \(value)") { error in
                guard case .invalidField(let file, let named, _)? = error as? ProfileError else { return XCTFail("\(key) = \(value): \(error)") }
                XCTAssertEqual(file, path)
                XCTAssertEqual(named, field, "\(key) = \(value): \(error)")
            }
        }
    }

    /// Duplicate keys (JSON readers differ on which counts) and sources that describe another
    /// figure than the one used are refused, naming the field.
    func testDuplicateKeysAndSourcesThatDoNotDescribeTheirFigure() throws {
        let text = try String(contentsOfFile: repositoryProfiles + "/nrf52840.json", encoding: .utf8)
        let duplicate = directory + "/duplicate.json"
        try text.replacingOccurrences(of: "\"ramBytes\": 262144,", with: "\"ramBytes\": 262144, \"ramBytes\": 1024,")
            .write(toFile: duplicate, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DeviceProfile.load(file: duplicate)) { error in
            XCTAssertEqual((error as? ProfileError).map { if case .invalidField(_, let field, _) = $0 { return field } else { return "" } }, "ramBytes", "\(error)")
        }
        let wrongValue = try write("wrong-value.json") { object in
            var sources = object["sources"] as! [[String: Any]]
            sources[0]["value"] = 123
            object["sources"] = sources
        }
        XCTAssertThrowsError(try DeviceProfile.load(file: wrongValue)) { XCTAssertTrue("\($0)".contains("sources[0].value"), "\($0)") }
        let unknownField = try write("unknown-field.json") { object in
            var sources = object["sources"] as! [[String: Any]]
            sources[0]["field"] = "flashBytes"
            object["sources"] = sources
        }
        XCTAssertThrowsError(try DeviceProfile.load(file: unknownField)) { XCTAssertTrue("\($0)".contains("sources[0].field"), "\($0)") }
        let scalar = directory + "/scalar.json"
        try "42".write(toFile: scalar, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DeviceProfile.load(file: scalar)) { XCTAssertTrue("\($0)".contains("not a JSON object"), "\($0)") }
    }

    /// The profiles the binary carries are exactly the files in profiles/ (issue 20: a copied or
    /// installed binary finds them); `tools/embed-profiles` regenerates them after an edit.
    func testBuiltInProfilesAreTheFiles() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: repositoryProfiles).filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
        XCTAssertEqual(Set(BundledProfiles.files.keys), Set(names), "run tools/embed-profiles")
        for name in names {
            let file = try String(contentsOfFile: repositoryProfiles + "/\(name).json", encoding: .utf8)
            XCTAssertEqual(BundledProfiles.files[name].map { $0 + "\n" }, file.hasSuffix("\n") ? file : file + "\n",
                           "\(name): the built-in copy differs from profiles/\(name).json: run tools/embed-profiles")
            XCTAssertEqual(try DeviceProfile.load(name, directory: "/nonexistent"), try DeviceProfile.load(file: repositoryProfiles + "/\(name).json"))
        }
    }

    /// Issue 20: whole seconds are rounded before they are split, never "77 min 60 s".
    /// Item 8 of issue 20: one unit per table column, chosen by the column's largest value.
    func testTableColumnsKeepOneUnit() {
        let energies = EnergyColumn([882.6, 4752.0])
        XCTAssertEqual(energies.format(882.6), "0.25 Wh")
        XCTAssertEqual(energies.format(4752.0), "1.32 Wh")
        XCTAssertEqual(EnergyColumn([882.6, 777.2]).format(777.2), "777.2 J")
        let times = DurationColumn([963, 10080])
        XCTAssertEqual(times.format(963), "0 h 16 min")
        XCTAssertEqual(times.format(10080), "2 h 48 min")
        XCTAssertEqual(DurationColumn([294, 259]).format(259), "4 min 19 s")
        XCTAssertEqual(DurationColumn([4.6, 100]).format(4.6), "4.6 s")
    }

    func testDurationsRoundBeforeSplitting() {
        XCTAssertEqual(formatDuration(4679.6), "78 min 0 s")
        XCTAssertEqual(formatDuration(4659.7), "77 min 40 s")
        XCTAssertEqual(formatDuration(125), "2 min 5 s")
        XCTAssertEqual(formatDuration(0.25), "250 ms")
    }

    func testSizeParsing() throws {
        XCTAssertEqual(try SizeParser.parse("320KB"), 320_000)
        XCTAssertEqual(try SizeParser.parse("256KiB"), 262_144)
        XCTAssertEqual(try SizeParser.parse("48MiB"), 48 * 1_048_576)
        XCTAssertEqual(try SizeParser.parse("1.5GB"), 1_500_000_000)
        XCTAssertEqual(try SizeParser.parse("4096"), 4096)
        XCTAssertEqual(try SizeParser.parse("2 MiB"), 2 * 1_048_576)
        XCTAssertThrowsError(try SizeParser.parse("lots"))
        XCTAssertThrowsError(try SizeParser.parse("-5MB"))
    }

    func testCostModel() throws {
        let profile = try DeviceProfile.load("stm32f746-disco", directory: repositoryProfiles)
        // 1 GFLOP of 3x3 convolutions at 0.1 GFLOP/s = 10 s; 4.6 MB read at 4.6 MB/s = 1 s; 4.4 MB
        // written = 1 s; 1000 ops x 0.11 ms. The SDMMC's DMA overlaps the 2.11 s of storage with
        // the 10 s of compute: nothing is waited for, and the energy is the compute's.
        let cost = DeviceCost(profile: profile, flops: 1_000_000_000, bytesRead: 4_600_000, bytesWritten: 4_400_000, operations: 1000)
        XCTAssertEqual(cost.computeSeconds, 10, accuracy: 1e-9)
        XCTAssertEqual(cost.storageSeconds, 2.11, accuracy: 1e-9)
        XCTAssertEqual(cost.storageWaitSeconds, 0)
        XCTAssertEqual(cost.seconds, 10, accuracy: 1e-9)
        XCTAssertEqual(cost.energyJoules, 10 * profile.power.activeW, accuracy: 1e-9)
    }

    /// A version-2 profile with round figures, and work whose cost is computed by hand: each
    /// class's FLOPs at its rate or its bytes at the bandwidth, the longer; storage overlapped or
    /// not; the wait at the idle power.
    func testHandComputedCostUnderAVersion2Profile() throws {
        let json = """
        {"schemaVersion": 2, "name": "round", "displayName": "round figures", "class": "sbc", "ramBytes": "1MiB", "reservedBytes": 0,
         "storage": {"medium": "card", "readMBps": 10, "writeMBps": 5, "latencyMs": 1, "overlapsCompute": true, "capacityBytes": "1GB", "peCycles": 100},
         "compute": {"convolutionGflops": 2, "gemmGflops": 1, "elementwiseGflops": 0.5, "memoryGBps": 1},
         "power": {"activeW": 2, "idleW": 0.5},
         "sources": [\(["compute.convolutionGflops", "compute.gemmGflops", "compute.elementwiseGflops", "compute.memoryGBps",
                         "storage.overlapsCompute", "storage.capacityBytes", "storage.peCycles"].map { "{\"field\": \"\($0)\", \"estimate\": true, \"source\": \"test\"}" }.joined(separator: ", "))]}
        """
        var profile = try DeviceProfile.parse(Data(json.utf8), file: "round.json")
        XCTAssertEqual(profile.storage.endurance, 100_000_000_000)
        // 3x3 conv: 4 GFLOP at 2 GFLOP/s = 2 s (its 1 GB at 1 GB/s = 1 s); GEMM: 0.1 GFLOP at 1 = 0.1 s, its
        // 0.4 GB = 0.4 s; element-wise: 0.1 GFLOP at 0.5 = 0.2 s, its 2 GB = 2 s. Compute 2 + 0.4 + 2 = 4.4 s.
        let work = OperationWork(convolutionFlops: 4_000_000_000, convolutionBytes: 1_000_000_000, gemmFlops: 100_000_000,
                                 gemmBytes: 400_000_000, elementwiseFlops: 100_000_000, elementwiseBytes: 2_000_000_000)
        // Storage: 10 MB read at 10 MB/s = 1 s, 10 MB written at 5 MB/s = 2 s, 1000 ops x 1 ms = 1 s: 4 s.
        let overlapped = DeviceCost(profile: profile, work: work, bytesRead: 10_000_000, bytesWritten: 10_000_000, operations: 1000)
        XCTAssertEqual(overlapped.convolutionSeconds, 2, accuracy: 1e-12)
        XCTAssertEqual(overlapped.gemmSeconds, 0.4, accuracy: 1e-12)
        XCTAssertEqual(overlapped.elementwiseSeconds, 2, accuracy: 1e-12)
        XCTAssertEqual(overlapped.computeSeconds, 4.4, accuracy: 1e-12)
        XCTAssertEqual(overlapped.storageSeconds, 4, accuracy: 1e-12)
        XCTAssertEqual(overlapped.storageWaitSeconds, 0, "4 s of storage hide behind 4.4 s of compute")
        XCTAssertEqual(overlapped.seconds, 4.4, accuracy: 1e-12)
        XCTAssertEqual(overlapped.energyJoules, 8.8, accuracy: 1e-12)
        profile.storage.overlapsCompute = false
        let serial = DeviceCost(profile: profile, work: work, bytesRead: 10_000_000, bytesWritten: 10_000_000, operations: 1000)
        XCTAssertEqual(serial.storageWaitSeconds, 4, accuracy: 1e-12)
        XCTAssertEqual(serial.seconds, 8.4, accuracy: 1e-12)
        XCTAssertEqual(serial.energyJoules, 8.8 + 4 * 0.5, accuracy: 1e-12, "the wait at the idle power")
        // 1 GB of capacity, 100 GB of endurance: a 2 GB store and 2 GB written warn twice.
        let wear = StorageWear(profile: profile, storeBytes: 2_000_000_000, bytesWritten: 2_000_000_000)
        XCTAssertEqual(wear.capacityShare, 2)
        XCTAssertEqual(wear.enduranceShare, 0.02)
        XCTAssertEqual(wear.warnings.count, 2, "\(wear.warnings)")
        XCTAssertTrue(wear.warnings[0].contains("larger than") && wear.warnings[1].contains("2.0% of the write endurance"), "\(wear.warnings)")
        XCTAssertEqual(StorageWear(profile: profile, storeBytes: 1000, bytesWritten: 999_000_000).warnings, [], "under 1% of the endurance")
    }
}

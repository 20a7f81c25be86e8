import Foundation
import XCTest

/// Issue 20's small frictions that are fixed so far (each as a new user meets it).
final class NewcomerTests: CLITestCase {
    func testVersionAndOneDefaultPerOption() throws {
        let version = try run(["--version"])
        XCTAssertEqual(version.code, 0)
        XCTAssertFalse(version.out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        let help = try run(["train", "--help"]).out
        let threads = help.components(separatedBy: "\n").drop { !$0.contains("--threads") }.prefix(3).joined()
        XCTAssertEqual(threads.components(separatedBy: "default").count - 1, 1, "one default shown for --threads: \(threads)")
        XCTAssertFalse(try run(["bench", "--help"]).out.contains("swift run"), "bench help names the built binary")
    }

    /// Batch norm cannot learn from one sample: plan and train refuse batch 1 alike.
    func testBatchOfOneIsRefusedByPlanAndTrain() throws {
        for command in [["train", "--store", directory + "/one.sqlite", "--quiet"], ["plan", "--profile", "stm32f746-disco"]] {
            let result = try run(command + ["--batch-size", "1"])
            XCTAssertEqual(result.code, 2, "\(command): \(result.err)")
            XCTAssertTrue(result.err.contains("batch norm needs at least 2 samples"), "\(command): \(result.err)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/one.sqlite"))
        // Nor a training set of one sample.
        let single = try run(["train", "--store", directory + "/single.sqlite", "--quiet", "--profile", "none", "--train-size", "0.0001%"])
        XCTAssertEqual(single.code, 2, single.err)
        XCTAssertTrue(single.err.contains("gives 1 training sample"), single.err)
    }

    func testUsageErrorsInRunNameTheSubcommand() throws {
        let result = try run(["cache", "export", "--store", directory + "/none.sqlite", "--level", "1", "--format", "csv"])
        XCTAssertEqual(result.code, 2, result.err)
        XCTAssertTrue(result.err.contains("See 'blockwise cache export --help'"), result.err)
    }

    func testUnknownProfileKeysAreRefused() throws {
        let text = try String(contentsOfFile: repository + "/profiles/nrf52840.json", encoding: .utf8)
        let path = directory + "/typo.json"
        let first = try XCTUnwrap(text.range(of: "\"computeGflops\":"))
        try text.replacingCharacters(in: first, with: "\"computeGFlops\": 1, \"computeGflops\":").write(toFile: path, atomically: true, encoding: .utf8)
        let result = try run(["profiles", "validate", path])
        XCTAssertEqual(result.code, 1)
        XCTAssertTrue(result.err.contains("field 'computeGFlops' is not a profile field"), result.err)
    }

    func testProfileByteCountsTakeUnits() throws {
        let text = try String(contentsOfFile: repository + "/profiles/nrf52840.json", encoding: .utf8)
        let withUnits = directory + "/units.json"
        try text.replacingOccurrences(of: "\"ramBytes\": 262144,", with: "\"ramBytes\": \"256KiB\",")
            .replacingOccurrences(of: "\"reservedBytes\": 32768,", with: "\"reservedBytes\": \"32KiB\",")
            .write(toFile: withUnits, atomically: true, encoding: .utf8)
        let valid = try run(["profiles", "validate", withUnits])
        XCTAssertEqual(valid.code, 0, valid.err)
        XCTAssertTrue(valid.out.contains("budget 224 KiB"), valid.out)
        let bad = directory + "/bad-units.json"
        try text.replacingOccurrences(of: "\"ramBytes\": 262144,", with: "\"ramBytes\": \"lots\",").write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try run(["profiles", "validate", bad])
        XCTAssertEqual(refused.code, 1)
        XCTAssertTrue(refused.err.contains("field 'ramBytes' should be a number of bytes or a size"), refused.err)
    }

    /// A copied binary, run outside the checkout without BLOCKWISE_PROFILES, finds every profile.
    func testACopiedBinaryFindsTheBundledProfiles() throws {
        let copy = directory + "/bin/blockwise"
        try FileManager.default.createDirectory(atPath: directory + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: binary.path, toPath: copy)
        for arguments in [["profiles"], ["plan", "--profile", "rpi-zero-2w", "--modules", "1", "--train-size", "600"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: copy)
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            var environment = ProcessInfo.processInfo.environment
            environment["BLOCKWISE_PROFILES"] = nil
            process.environment = environment
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, "\(arguments): \(text)")
            XCTAssertTrue(text.contains("Raspberry Pi Zero 2 W"), "\(arguments): \(text)")
        }
    }

    /// plan takes train's defaults and data set, and gates a script: exit 3 when nothing fits.
    func testPlanHasTrainsDefaultsAndAnExitCode() throws {
        let fits = try run(["plan", "--profile", "rpi-zero-2w"])
        XCTAssertEqual(fits.code, 0, fits.err)
        XCTAssertTrue(fits.out.contains("12000 train / 10000 test samples"), "20% of Fashion-MNIST, as train: " + fits.out)
        let mnist = try run(["plan", "--profile", "rpi-zero-2w", "--dataset", "mnist5k", "--train-size", "all"])
        XCTAssertTrue(mnist.out.contains("4000 train / 1000 test samples"), mnist.out)
        let tooBig = try run(["plan", "--profile", "stm32f746-disco"])
        XCTAssertEqual(tooBig.code, 3, "nothing fits: exit 3 " + tooBig.out)
        XCTAssertTrue(tooBig.out.contains("does NOT fit"), tooBig.out)
    }

    /// Scriptable answers: profiles, cache ls, cache stats and plan as JSON.
    func testAnswersAsJSON() throws {
        func object(_ result: (code: Int32, out: String, err: String)) throws -> Any {
            XCTAssertEqual(result.code, 0, result.err)
            return try JSONSerialization.jsonObject(with: Data(result.out.utf8))
        }
        let profiles = try XCTUnwrap(try object(try run(["profiles", "--json"])) as? [[String: Any]])
        XCTAssertTrue(profiles.contains { ($0["profile"] as? [String: Any])?["name"] as? String == "stm32f746-disco" && $0["budgetBytes"] as? Int == 294_912 })
        let store = directory + "/json.sqlite"
        XCTAssertEqual(try run(["train", "--store", store, "--modules", "1", "--width", "4", "--train-size", "100", "--test-size", "100",
                                "--epochs", "1", "--threads", "1", "--profile", "none", "--quiet"]).code, 0)
        let info = try XCTUnwrap(try object(try run(["cache", "ls", "--store", store, "--json"])) as? [String: Any])
        XCTAssertEqual((info["levels"] as? [Any])?.count, 4, "levels 0 and 1, train and test")
        let stats = try XCTUnwrap(try object(try run(["cache", "stats", "--store", store, "--level", "1", "--json"])) as? [String: Any])
        XCTAssertEqual(stats["rows"] as? Int, 100)
        let planFile = directory + "/plan.json"
        XCTAssertEqual(try run(["plan", "--profile", "rpi-zero-2w", "--modules", "2", "--json", planFile]).code, 0)
        let plan = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: planFile))) as? [String: Any])
        XCTAssertEqual(plan["profile"] as? String, "rpi-zero-2w")
        XCTAssertEqual((plan["modules"] as? [[String: Any]])?.map { $0["number"] as? Int }, [1, 2])
        XCTAssertGreaterThan(plan["storeBytes"] as? Int ?? 0, 0)
    }

    /// "Which of my devices?" and "the largest model that fits", without a loop.
    func testPlanAcrossProfilesAndMaximize() throws {
        let across = try run(["plan", "--profile", "stm32f746-disco,esp32-s3-psram,rpi-zero-2w", "--width", "8", "--store-cache", "16KiB",
                              "--fit", "microbatch", "--maximize", "width"])
        XCTAssertEqual(across.code, 0, across.err)
        let rows = across.out.components(separatedBy: "\n").filter { ["stm32f746-disco", "esp32-s3-psram", "rpi-zero-2w"].contains(where: $0.hasPrefix) }
        XCTAssertEqual(rows.count, 3, across.out)
        XCTAssertTrue(across.out.contains("largest width"), across.out)
        let mcu = ["plan", "--profile", "stm32f746-disco", "--modules", "4", "--batch-size", "32", "--fit", "microbatch", "--workspace", "200",
                   "--store-cache", "16KiB", "--feature-dtype", "fp16", "--train-size", "600", "--test-size", "1000"]
        let best = try run(mcu + ["--maximize", "width"])
        XCTAssertEqual(best.code, 0, best.out + best.err)
        let match = try XCTUnwrap(best.out.range(of: #"the largest that fits the budget 288 KiB is (\d+)"#, options: .regularExpression))
        let width = try XCTUnwrap(Int(best.out[match].split(separator: " ").last!))
        // The answer is exact: that width fits, one more does not.
        XCTAssertEqual(try run(mcu + ["--width", "\(width)"]).code, 0)
        XCTAssertEqual(try run(mcu + ["--width", "\(width + 1)"]).code, 3)
    }

    /// One memory figure per module: train's "planned peak" is plan's peak, store engine included.
    func testPlanAndTrainGiveOnePlannedPeak() throws {
        let options = ["--profile", "stm32f746-disco", "--width", "4", "--modules", "4", "--batch-size", "32", "--fit", "microbatch",
                       "--workspace", "200", "--store-cache", "16KiB", "--feature-dtype", "fp16", "--train-size", "600", "--test-size", "1000"]
        let plan = try run(["plan"] + options)
        XCTAssertEqual(plan.code, 0, plan.err)
        let planned = plan.out.components(separatedBy: "\n").filter { $0.range(of: #"^[1-4] "#, options: .regularExpression) != nil }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().prefix(2).joined(separator: " ") }
        let train = try run(["train"] + options + ["--epochs", "1", "--store", directory + "/one-figure.sqlite"])
        XCTAssertEqual(train.code, 0, train.err)
        let trained = train.out.components(separatedBy: "\n").compactMap { line -> String? in
            guard let range = line.range(of: #"planned peak [0-9.]+ [KMG]?i?B"#, options: .regularExpression) else { return nil }
            return String(line[range].dropFirst("planned peak ".count))
        }
        XCTAssertEqual(planned.count, 4, plan.out)
        XCTAssertEqual(trained, planned, "plan:\n\(plan.out)\ntrain:\n\(train.out)")
        // Both print one function's figure; what the run measured must stay within it.
        func bytes(_ text: String) -> Double {
            let parts = text.split(separator: " ")
            let unit: Double = ["B": 1, "KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824][String(parts[1])] ?? .nan
            return Double(parts[0])! * unit
        }
        let measured = train.out.components(separatedBy: "\n").compactMap { line -> String? in
            guard line.hasPrefix("module "), let range = line.range(of: #"peak [0-9.]+ [KMG]?i?B$"#, options: .regularExpression) else { return nil }
            return String(line[range].dropFirst("peak ".count))
        }
        XCTAssertEqual(measured.count, 4, train.out)
        for (got, bound) in zip(measured, trained) { XCTAssertLessThanOrEqual(bytes(got), bytes(bound), "measured \(got) within planned \(bound)") }
        XCTAssertTrue(train.out.contains("storeEngine 57.3 KiB"), train.out)
    }

    func testCacheShowNamesTheClass() throws {
        let store = directory + "/classes.sqlite"
        let arguments = ["train", "--store", store, "--modules", "1", "--width", "8", "--train-size", "600", "--test-size", "100",
                         "--epochs", "2", "--threads", "1", "--profile", "none", "--quiet"]
        XCTAssertEqual(try run(arguments).code, 0)
        // Rerun: everything is reused, and the host time is still the run's, not "0.0 s".
        let again = try run(arguments)
        XCTAssertTrue(again.out.range(of: #"host time [0-9.]+ s \([0-9.]+ s in this process; the rest by earlier runs"#, options: .regularExpression) != nil
                      && !again.out.contains("host time 0.0 s"), again.out)
        let shown = try run(["cache", "show", "--store", store, "--level", "0", "--sample", "0"])
        XCTAssertEqual(shown.code, 0, shown.err)
        XCTAssertTrue(shown.out.range(of: #"label \d \((T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot)\)"#,
                                      options: .regularExpression) != nil, shown.out)
    }
}

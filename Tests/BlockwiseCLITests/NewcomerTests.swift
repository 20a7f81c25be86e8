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
        let first = try XCTUnwrap(text.range(of: "\"convolutionGflops\":"))
        try text.replacingCharacters(in: first, with: "\"convolutionGFlops\": 1, \"convolutionGflops\":").write(toFile: path, atomically: true, encoding: .utf8)
        let result = try run(["profiles", "validate", path])
        XCTAssertEqual(result.code, 1)
        XCTAssertTrue(result.err.contains("field 'compute.convolutionGFlops' is not a profile field"), result.err)
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

    /// Item 8: every example in every help text can be pasted as printed: no command is wrapped in
    /// the middle (a continued line ends in a backslash), and every option it passes is one the
    /// named subcommand lists.
    func testHelpExamplesPasteAsPrinted() throws {
        let commands = ["", "train", "plan", "compare", "report", "profiles", "profiles list", "profiles show", "profiles validate",
                        "cache", "cache ls", "cache stats", "cache show", "cache verify", "cache export", "cache vacuum",
                        "bench kernels", "bench train", "bench cache"]
        var examples = 0
        for command in commands {
            let help = try run(command.split(separator: " ").map(String.init) + ["--help"]).out
            let lines = help.components(separatedBy: "\n")
            guard let start = lines.firstIndex(where: { $0 == "Example:" || $0 == "Examples:" }) else { continue }
            var joined: [String] = [], continued = false
            for line in lines[(start + 1)...] {
                if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("USAGE:") { break }
                if continued {
                    XCTAssertTrue(line.hasPrefix("      "), "'\(command) --help': a continued example line is not indented: '\(line)'")
                    joined[joined.count - 1] += " " + line.trimmingCharacters(in: .whitespaces)
                } else {
                    XCTAssertTrue(line.hasPrefix("  blockwise ") || line.hasPrefix("  .build/release/blockwise "),
                                  "'\(command) --help': an example is wrapped in the middle, this line starts no command: '\(line)'")
                    joined.append(line.trimmingCharacters(in: .whitespaces))
                }
                continued = line.hasSuffix(" \\")
            }
            for example in joined {
                examples += 1
                let words = example.replacingOccurrences(of: " \\ ", with: " ").split(separator: " ").map(String.init).dropFirst()
                let subcommands: Set = ["train", "plan", "compare", "report", "profiles", "list", "show", "validate", "cache", "ls",
                                        "stats", "verify", "export", "vacuum", "bench", "kernels"]
                let path = Array(words.prefix { subcommands.contains($0) })
                let options = try run(path + ["--help"]).out
                for flag in words where flag.hasPrefix("--") {
                    XCTAssertTrue(options.contains(flag + " ") || options.contains(flag + "\n") || options.contains(flag + ","),
                                  "'\(example)' (from '\(command) --help'): '\(path.joined(separator: " ")) --help' has no \(flag)")
                }
            }
        }
        XCTAssertGreaterThan(examples, 15, "the help texts' examples were not found")
    }

    /// Item 2: when nothing fits even at the smallest batch, plan and train name every option that
    /// changes the outcome with the peak it gives, and the options together make the run fit.
    func testHopelessPlanNamesEveryOptionByHowMuch() throws {
        // Width 16: with the default (smallest) arena a width-8 module fits by --store-cache alone.
        let options = ["--profile", "stm32f746-disco", "--width", "16", "--batch-size", "2", "--workspace", "2000"]
        let plan = try run(["plan"] + options)
        XCTAssertEqual(plan.code, 3, plan.out + plan.err)
        XCTAssertTrue(plan.out.contains("at batch 2, the smallest that trains, module 1 needs 1.48 MiB of the 288 KiB budget"), plan.out)
        XCTAssertTrue(plan.out.contains("storeEngine up to 1.12 MiB"), plan.out)
        for option in ["--store-cache 16KiB", "--width 1", "--head linear", "--budget 1.5MiB"] {
            XCTAssertTrue(plan.out.contains("  " + option + " "), "\(option) missing:\n" + plan.out)
        }
        XCTAssertTrue(plan.out.contains("--store-cache 16KiB     peak 432 KiB    -1.06 MiB   still 144 KiB over"), plan.out)
        let together = try XCTUnwrap(plan.out.components(separatedBy: "\n").first { $0.hasPrefix("  together: ") })
        XCTAssertTrue(together.hasSuffix("to spare)"), together)
        let suggested = together.dropFirst("  together: ".count).components(separatedBy: " -> ")[0].split(separator: " ").map(String.init)
        // The suggested options, as printed, make the same plan fit (exit 0).
        var fixed = options
        for index in stride(from: 0, to: suggested.count, by: 2) {
            if let at = fixed.firstIndex(of: suggested[index]) { fixed[at + 1] = suggested[index + 1] } else { fixed += [suggested[index], suggested[index + 1]] }
        }
        let fits = try run(["plan"] + fixed)
        XCTAssertEqual(fits.code, 0, fixed.joined(separator: " ") + "\n" + fits.out)
        // train stops before training with the same advice.
        let train = try run(["train"] + options + ["--train-size", "200", "--test-size", "100", "--store", directory + "/s.sqlite", "--report", directory + "/r"])
        XCTAssertNotEqual(train.code, 0)
        XCTAssertTrue(train.err.contains("--store-cache 16KiB     peak 432 KiB"), train.err)
    }

    /// Item 7: the report's plots and page as a person reads them, and item 8's read-only commands
    /// that leave no -wal/-shm behind and the labelled PNG.
    func testReportPlotsPagePNGAndCleanReaders() throws {
        let store = directory + "/report.sqlite", report = directory + "/report"
        let train = try run(["train", "--store", store, "--report", report, "--modules", "2", "--width", "8", "--train-size", "600",
                             "--test-size", "500", "--epochs", "1", "--threads", "1", "--quiet"])
        XCTAssertEqual(train.code, 0, train.err)
        // memory.svg: host time on x, each module's start and streaming marked, the peak, the budget over a broken axis.
        let memory = try String(contentsOfFile: report + "/memory.svg", encoding: .utf8)
        XCTAssertTrue(memory.contains("host time (s)"), memory)
        XCTAssertFalse(memory.contains("ledger events"), memory)
        XCTAssertTrue(memory.contains("module 1 streams level 1 at") && memory.contains("module 2 streams level 2 at"))
        XCTAssertTrue(memory.contains(">peak 9.20 MiB (module 1)</text>"), memory)
        XCTAssertTrue(memory.contains("budget 352 MiB (axis broken: 38.2x the peak)"), memory)
        // The hover on the peak lists the buffers live at it, the largest first.
        XCTAssertTrue(memory.contains("<title>peak 9.20 MiB in module 1: parameters"), memory)
        // report.json: every timeline point has its time; the buffers live at the peak add up to it.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report + "/report.json"))) as! [String: Any]
        let timeline = json["timeline"] as! [[String: Any]]
        XCTAssertTrue(timeline.allSatisfy { $0["seconds"] is Double })
        let tensors = json["peakTensors"] as! [[String: Any]]
        XCTAssertEqual(tensors.reduce(0) { $0 + ($1["bytes"] as! Int) }, json["peakBytes"] as! Int)
        // accuracy.svg: the y ticks are evenly spaced and each label is its value.
        let accuracy = try String(contentsOfFile: report + "/accuracy.svg", encoding: .utf8)
        let ticks = accuracy.matches(of: #/<text x="64.0" y="([0-9.]+)" text-anchor="end">([0-9.]+)%</text>/#).map { (Double($0.1)!, Double($0.2)!) }
        XCTAssertGreaterThan(ticks.count, 2, accuracy)
        let valueSteps = zip(ticks.dropFirst(), ticks).map { $0.1 - $1.1 }, pixelSteps = zip(ticks.dropFirst(), ticks).map { $0.0 - $1.0 }
        for (step, pixels) in zip(valueSteps, pixelSteps) {
            XCTAssertEqual(step, valueSteps[0], accuracy: 1e-9, "tick labels \(ticks.map(\.1)) are not evenly spaced values")
            XCTAssertEqual(pixels, pixelSteps[0], accuracy: 0.11)
        }
        // report.html: the device and the budget, the closing lines without the table again, the tensors.
        let html = try String(contentsOfFile: report + "/report.html", encoding: .utf8)
        XCTAssertTrue(html.contains("Emulated device: <b>Raspberry Pi Zero 2 W"), html)
        XCTAssertTrue(html.contains("budget <b>352 MiB</b>, held"), html)
        let pre = try XCTUnwrap(html.firstMatch(of: #/<pre>([^<]*)</pre>/#)).1
        XCTAssertFalse(pre.contains("train acc"), String(pre))
        XCTAssertTrue(pre.contains("peak memory 9.20 MiB"), String(pre))
        XCTAssertTrue(html.contains("white-space:pre-wrap"))
        XCTAssertTrue(html.contains("<h3>Live at the peak (9.20 MiB)"), html)
        // modules.csv: one row per module, exact values.
        let csv = try String(contentsOfFile: report + "/modules.csv", encoding: .utf8).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        XCTAssertEqual(csv.count, 3, csv.joined(separator: "\n"))
        XCTAssertTrue(csv[0].hasPrefix("module,train_accuracy,test_accuracy,kinetic_energy,peak_bytes,"), csv[0])
        XCTAssertTrue(csv[1].hasPrefix("1,"), csv[1])
        // Run again: every module is reused from the store, and the report still shows the whole
        // run (each module keeps its timeline and peak buffers in the store).
        let again = try run(["train", "--store", store, "--report", report, "--modules", "2", "--width", "8", "--train-size", "600",
                             "--test-size", "500", "--epochs", "1", "--threads", "1", "--quiet"])
        XCTAssertEqual(again.code, 0, again.err)
        let rerun = try String(contentsOfFile: report + "/memory.svg", encoding: .utf8)
        XCTAssertTrue(rerun.contains(">peak 9.20 MiB (module 1)</text>") && rerun.contains("module 2 streams level 2 at"), rerun)
        let rerunJSON = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report + "/report.json"))) as! [String: Any]
        XCTAssertEqual((rerunJSON["peakTensors"] as! [[String: Any]]).reduce(0) { $0 + ($1["bytes"] as! Int) }, rerunJSON["peakBytes"] as! Int)
        // Read-only commands leave no -wal or -shm beside the store.
        for command in [["cache", "ls"], ["cache", "stats", "--level", "1"], ["cache", "verify"], ["report", "--report", directory + "/again"],
                        ["cache", "show", "--level", "1", "--sample", "0", "--png", directory + "/s.png"]] {
            let result = try run(command + ["--store", store])
            XCTAssertEqual(result.code, 0, command.joined(separator: " ") + ": " + result.err)
            for suffix in ["-wal", "-shm"] {
                XCTAssertFalse(FileManager.default.fileExists(atPath: store + suffix), "\(command.joined(separator: " ")) left \(store + suffix)")
            }
        }
        // The PNG: 8 tiles of 14x14 at 6 pixels per value under a two-line caption (272 x 312).
        let png = try Data(contentsOf: URL(fileURLWithPath: directory + "/s.png"))
        let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual([width, height], [272, 312])
        // CSV where tables are printed.
        let levels = try run(["cache", "ls", "--store", store, "--csv"])
        XCTAssertTrue(levels.out.hasPrefix("level,split,shape,encoding,rows,bytes_on_disk,complete\r\n0,train,1x28x28,fp32,600,"), levels.out)
        let stats = try run(["cache", "stats", "--store", store, "--level", "1", "--csv"])
        XCTAssertEqual(stats.out.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count, 9, stats.out)
        let profiles = try run(["profiles", "--csv"])
        XCTAssertTrue(profiles.out.contains("\r\nstm32f746-disco,mcu,"), profiles.out)
        let planned = try run(["plan", "--profile", "stm32f746-disco,rpi-zero-2w", "--csv", directory + "/p.csv"])
        XCTAssertEqual(planned.code, 0, planned.err)
        let rows = try String(contentsOfFile: directory + "/p.csv", encoding: .utf8).components(separatedBy: "\r\n")
        XCTAssertEqual(rows[0], "profile,budget_bytes,peak_bytes,fits,device_seconds,device_joules")
        XCTAssertTrue(rows[1].hasPrefix("stm32f746-disco,294912,") && rows[1].contains(",false,"), rows[1])
        let single = try run(["plan", "--csv", directory + "/m.csv"])
        XCTAssertEqual(try String(contentsOfFile: directory + "/m.csv", encoding: .utf8).components(separatedBy: "\r\n").filter { !$0.isEmpty }.count, 7, single.out)
    }
}

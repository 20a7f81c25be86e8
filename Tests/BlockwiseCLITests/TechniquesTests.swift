import Foundation
import XCTest

/// Issue 14 through the CLI: the techniques' flags, `plan --techniques`, `compare --techniques`.
final class TechniquesTests: CLITestCase {
    func testFlagsThatDoNotApplyAreRefusedNamingTheFlag() throws {
        let cases: [([String], String)] = [
            (["--recompute", "modules"], "--recompute applies to --procedure e2e only"),
            (["--procedure", "e2e", "--recompute", "layers"], "--recompute takes 'modules'"),
            (["--procedure", "e2e", "--page", "gradients"], "--page takes 'activations' or 'activations,weights'"),
            (["--procedure", "parallel", "--page", "activations"], "--page applies to --procedure e2e only"),
            (["--procedure", "e2e", "--page", "activations", "--recompute", "modules"], "pass one of them"),
            (["--techniques", "e2e,checkpointing"], "unknown technique 'checkpointing'; accepted: e2e, e2e-recompute"),
            (["--arena", "slots", "--placed-workspace"], "--placed-workspace places each convolution's workspace in the packed arena: it needs --arena packed or smallest (got --arena slots)"),
            (["--procedure", "parallel", "--placed-workspace"], "it needs --arena packed or smallest (got --arena slots, which parallel uses)"),
        ]
        for (options, message) in cases {
            let result = try run(["plan"] + options)
            XCTAssertEqual(result.code, 2, "\(options): \(result.out)\(result.err)")
            XCTAssertTrue(result.err.contains(message), "\(options): \(result.err)")
        }
        // Found by an adversarial review: refused before anything runs, naming the conflict.
        for command in ["train", "plan"] {
            let result = try run([command, "--procedure", "e2e", "--page", "activations", "--in-memory", "--train-size", "100"])
            XCTAssertEqual(result.code, 2, command + result.err)
            XCTAssertTrue(result.err.contains("drop --in-memory"), result.err)
        }
        for command in ["plan", "compare"] {
            let result = try run([command, "--techniques", "e2e,e2e-recompute", "--modules", "1", "--train-size", "100"])
            XCTAssertEqual(result.code, 2, command + result.err)
            XCTAssertTrue(result.err.contains("e2e-recompute needs at least 2 modules"), result.err)
        }
    }

    /// `compare --techniques` under a budget some technique cannot meet stops before training anything.
    func testCompareChecksEveryTechniqueAgainstTheBudgetFirst() throws {
        let result = try run(["compare", "--techniques", "sequential,e2e", "--modules", "3", "--blocks", "1", "--width", "4", "--train-size", "200",
                              "--test-size", "100", "--epochs", "1", "--batch-size", "32", "--budget", "3MiB", "--fit", "microbatch",
                              "--store", directory + "/b.sqlite", "--report", directory + "/b-out", "--quiet"])
        XCTAssertEqual(result.code, 3, result.out + result.err)
        XCTAssertTrue(result.err.contains("e2e do not fit the budget"), result.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/b-sequential-vangl.sqlite"), "nothing trained")
    }

    /// On a microcontroller where plain e2e does not fit, the table says which technique does, and
    /// `--smallest-budget` prints that column alone.
    func testPlanTechniquesOnAMicrocontroller() throws {
        let options = ["plan", "--profile", "stm32f746-disco", "--width", "4", "--modules", "4", "--batch-size", "8", "--workspace", "200", "--fit", "microbatch",
                       "--store-cache", "16KiB", "--feature-dtype", "fp16", "--train-size", "600", "--test-size", "1000",
                       "--techniques", "e2e,e2e-recompute,e2e-paged,sequential,parallel"]
        let table = try run(options + ["--csv", directory + "/techniques.csv"])
        XCTAssertEqual(table.code, 0, table.out + table.err)
        let rows = try String(contentsOfFile: directory + "/techniques.csv", encoding: .utf8).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        XCTAssertEqual(rows.count, 6, table.out)
        let fits = Dictionary(uniqueKeysWithValues: rows.dropFirst().map { row -> (String, String) in
            let fields = row.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            return (fields[0], fields[4])
        })
        XCTAssertEqual(fits["e2e"], "NO", table.out)
        XCTAssertEqual(fits["sequential"], "yes", table.out)
        let smallest = try run(options + ["--smallest-budget"])
        XCTAssertEqual(smallest.code, 0)
        XCTAssertEqual(smallest.out.split(separator: "\n").count, 5, smallest.out)
        XCTAssertTrue(smallest.out.contains("e2e-paged"), smallest.out)
    }

    /// Training with each technique: the three end-to-end variants reach the same accuracy, the
    /// table and both plots are written.
    func testCompareTechniquesTrainsEachAndPlots() throws {
        let result = try run(["compare", "--techniques", "e2e,e2e-recompute,e2e-paged,sequential", "--modules", "2", "--blocks", "1", "--width", "4",
                              "--train-size", "200", "--test-size", "100", "--epochs", "1", "--batch-size", "20", "--profile", "rpi-zero-2w",
                              "--store", directory + "/t.sqlite", "--report", directory + "/out", "--quiet"])
        XCTAssertEqual(result.code, 0, result.out + result.err)
        for file in ["techniques.csv", "accuracy-vs-memory.svg", "time-vs-memory.svg", "techniques.json", "e2e-paged/report.html"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/out/" + file), file)
        }
        let rows = try String(contentsOfFile: directory + "/out/techniques.csv", encoding: .utf8).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        XCTAssertEqual(rows.count, 1 + 3 + 2, "e2e x3, sequential VanGL and TRGL")
        let accuracy = rows.dropFirst().map { $0.split(separator: ",").map(String.init) }.filter { $0[0].hasPrefix("e2e") }.map { $0[1] }
        XCTAssertEqual(Set(accuracy).count, 1, "the end-to-end variants train the same parameters: \(rows)")
        // The accuracy axis labels each tick with its value (2.5% steps read 82.5%, not 82%).
        let svg = try String(contentsOfFile: directory + "/out/accuracy-vs-memory.svg", encoding: .utf8)
        let ticks = svg.matches(of: #/text-anchor="end">([0-9.]+)%</text>/#).map { Double($0.1)! }
        XCTAssertGreaterThan(ticks.count, 2, svg)
        let steps = zip(ticks.dropFirst(), ticks).map { $0 - $1 }
        for step in steps { XCTAssertEqual(step, steps[0], accuracy: 1e-9, "tick labels \(ticks) are not evenly spaced values") }
    }
}

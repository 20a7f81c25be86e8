import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
import BlockwiseDevice
import BlockwisePlan
import BlockwiseTraining

/// End-to-end: runs the built `blockwise` binary.
final class CLITests: CLITestCase {
    func testHelpOnEveryCommand() throws {
        for command in [[], ["train"], ["compare"], ["plan"], ["profiles"], ["profiles", "show"], ["profiles", "validate"], ["cache"],
                        ["cache", "ls"], ["cache", "stats"], ["cache", "show"], ["cache", "verify"], ["cache", "export"], ["cache", "vacuum"],
                        ["report"], ["bench"], ["bench", "kernels"], ["bench", "cache"], ["bench", "train"]] {
            let result = try run(command + ["--help"])
            XCTAssertEqual(result.code, 0, "\(command) --help")
            XCTAssertTrue(result.out.contains("USAGE"), "\(command): \(result.out)")
        }
        XCTAssertTrue(try run(["train", "--help"]).out.contains("Examples"))
    }

    func testUsageErrorExitsTwoWithAMessage() throws {
        let bad = try run(["train", "--procedure", "sideways"])
        XCTAssertEqual(bad.code, 2)
        XCTAssertTrue(bad.err.contains("--procedure must be one of"), bad.err)
        let badNumber = try run(["train", "--width", "wide"])
        XCTAssertEqual(badNumber.code, 2)
        let badEngine = try run(["train", "--conv-engine", "gpu"])
        XCTAssertEqual(badEngine.code, 2)
        XCTAssertTrue(badEngine.err.contains("conv-engine"), badEngine.err)
        let budget = try run(["train", "--budget", "1KB", "--store", directory + "/b.sqlite"])
        XCTAssertEqual(budget.code, 3, "a budget that cannot be met exits 3: \(budget.err)")
        XCTAssertTrue(budget.err.contains("does not fit"), budget.err)
    }

    func testTinyTrainingRunWritesReportsAndAStore() throws {
        let store = directory + "/run.sqlite"
        let report = directory + "/report"
        let arguments = ["train", "--store", store, "--report", report, "--train-size", "200", "--test-size", "200", "--modules", "2",
                         "--width", "4", "--epochs", "1", "--batch-size", "50", "--profile", "stm32f746-disco", "--fit", "microbatch",
                         "--store-cache", "32KiB", "--feature-dtype", "fp16", "--workspace", "200"]
        let first = try run(arguments)
        XCTAssertEqual(first.code, 0, first.err)
        XCTAssertTrue(first.out.contains("best: module"), first.out)
        XCTAssertTrue(first.out.contains("budget 288 KiB held"), first.out)
        for name in ["report.json", "accuracy.svg", "memory.svg", "report.html", "arena.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: report + "/" + name), name)
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report + "/report.json"))) as? [String: Any]
        XCTAssertEqual((json?["modules"] as? [Any])?.count, 2)
        XCTAssertNotNil(json?["timeline"])
        let svg = try String(contentsOfFile: report + "/accuracy.svg", encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<?xml") && svg.contains("</svg>"))
        _ = try XMLDocument(data: Data(svg.utf8))  // well-formed XML
        // Running it again resumes the matching store, saying so.
        let second = try run(arguments)
        XCTAssertEqual(second.code, 0, second.err)
        XCTAssertTrue(second.out.contains("resuming"), second.out)
        XCTAssertTrue(second.out.contains("reused"), second.out)
        // A different configuration is refused with what differs and how to start fresh.
        var changed = arguments
        changed[changed.firstIndex(of: "--epochs")! + 1] = "2"
        let refused = try run(changed)
        XCTAssertEqual(refused.code, 1)
        XCTAssertTrue(refused.err.contains("epochsBase: 1 in the store, 2 requested") && refused.err.contains("--fresh"), refused.err)
        // The cache commands read it.
        let ls = try run(["cache", "ls", "--store", store])
        XCTAssertEqual(ls.code, 0, ls.err)
        XCTAssertTrue(ls.out.contains("fp16"), ls.out)
        XCTAssertEqual(try run(["cache", "verify", "--store", store]).code, 0)
        XCTAssertEqual(try run(["report", "--store", store, "--report", directory + "/again"]).code, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/again/memory.svg"))
    }

    /// `--eval-each-epoch` names the split it selected on: the test split, or the validation
    /// split with --validation-size (it used to say "test" for both); `plan --json` carries the
    /// resolved configuration, augmentation included.
    func testEvalEachEpochNamesItsSplitAndThePlanItsConfiguration() throws {
        let tiny = ["--modules", "2", "--blocks", "1", "--width", "4", "--batch-size", "16", "--train-size", "120", "--test-size", "60",
                    "--epochs", "1", "--profile", "none", "--in-memory", "--eval-each-epoch"]
        let test = try run(["train"] + tiny)
        XCTAssertEqual(test.code, 0, test.err)
        XCTAssertTrue(test.out.contains("best epoch's test accuracy, the authors' protocol (selected on test data"), test.out)
        XCTAssertTrue(test.out.contains("module 1: test accuracy"), test.out)
        let validation = try run(["train", "--validation-size", "30"] + tiny)
        XCTAssertEqual(validation.code, 0, validation.err)
        XCTAssertTrue(validation.out.contains("best epoch's validation accuracy, the authors' protocol (selected on validation data"), validation.out)
        XCTAssertTrue(validation.out.contains("module 1: validation accuracy") && !validation.out.contains("test accuracy"), validation.out)
        let plan = try run(["plan", "--augment", "crop=2,flip", "--augmented-inputs", "pool=2", "--json", directory + "/plan.json"] + tiny.dropLast())
        XCTAssertEqual(plan.code, 0, plan.err)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/plan.json"))) as? [String: Any]
        let configuration = json?["configuration"] as? [String: Any]
        XCTAssertEqual((configuration?["augment"] as? [String: Any])?["crop"] as? Int, 2, "\(configuration ?? [:])")
    }

    /// parallel and e2e keep every module resident: plan says so and gives the exact bytes the
    /// runtime's ledger measures for them (the library's resident plan).
    func testPlanForResidentProcedures() throws {
        let model = ["--modules", "3", "--width", "8", "--batch-size", "16", "--profile", "none"]
        let sequential = try run(["plan"] + model)
        XCTAssertEqual(sequential.code, 0, sequential.err)
        for procedure in ["parallel", "e2e"] {
            let result = try run(["plan", "--procedure", procedure] + model)
            XCTAssertEqual(result.code, 0, result.err)
            XCTAssertTrue(result.out.contains("keeps all 3 modules resident"), result.out)
            // The printed peak is what a run of the same options measures (it compared the CLI's
            // output with the function the CLI calls). RunPlanTests checks FLOPs the same way.
            let trained = try run(["train", "--procedure", procedure] + model + ["--train-size", "64", "--test-size", "32", "--epochs", "1",
                                                                                 "--json", directory + "/r.json", "--report", directory + "/r", "--quiet"])
            XCTAssertEqual(trained.code, 0, trained.err)
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/r.json"))) as! [String: Any]
            XCTAssertTrue(result.out.contains("(\(report["peakBytes"] as! Int) bytes;"), result.out)
        }
        let tight = try run(["plan", "--procedure", "e2e", "--budget", "100KB"] + model.dropLast(2))
        XCTAssertTrue(tight.out.contains("does NOT fit"), tight.out)
        XCTAssertEqual(tight.code, 3, "a plan that does not fit exits 3, as train does")
    }

    /// `plan --fit microbatch` plans what `train --fit microbatch` runs (the README's microcontroller
    /// example): modules that do not fit at the batch get the largest micro-batch that fits.
    func testPlanWithMicroBatches() throws {
        let mcu = ["plan", "--profile", "stm32f746-disco", "--width", "4", "--modules", "4", "--batch-size", "32",
                   "--workspace", "200", "--store-cache", "16KiB", "--train-size", "600", "--test-size", "1000",
                   "--feature-dtype", "fp16"]
        let strict = try run(mcu)
        XCTAssertEqual(strict.code, 3, "does not fit: exit 3 " + strict.err)
        XCTAssertTrue(strict.out.contains("does NOT fit the budget (train with --fit microbatch"), strict.out)
        let micro = try run(mcu + ["--fit", "microbatch"])
        XCTAssertEqual(micro.code, 0, micro.err)
        XCTAssertTrue(micro.out.contains("fits the budget with micro-batches"), micro.out)
        XCTAssertTrue(micro.out.contains("micro-batch"), micro.out)
    }
}

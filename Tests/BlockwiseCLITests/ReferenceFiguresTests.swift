import Foundation
import XCTest

/// Refactors keep behaviour: five small runs (sequential, multilap, parallel, e2e, and a
/// micro-batched microcontroller run) give exactly the figures the binary of commit 015f34a gave
/// (the state before the run-plan issue, 13): every module's test and train accuracy, kinetic
/// energy, counted FLOPs, store bytes and operations and the trainer's peak (the ledger's peak
/// less SQLite's own memory, which varies by a few bytes with the statements a version prepares),
/// and every epoch's losses and train accuracy.
///
/// Recorded with, for each configuration `C` of `Fixtures/reference-015f34a.json` and each core:
///     git worktree add /tmp/ref015 015f34a && (cd /tmp/ref015 && swift build -c release)
///     OPENBLAS_CORETYPE=SkylakeX /tmp/ref015/.build/release/blockwise train C --store s.sqlite --json out.json
/// (then the fields above copied from out.json). The figures depend on the CPU's instruction set
/// (oneDNN's kernels) and OpenBLAS's core type, so they hold on AVX-512 machines (this one and
/// CI's), under both core types `tools/test` can pick there.
final class ReferenceFiguresTests: CLITestCase {
    func testSmallRunsGiveTheFiguresOf015f34a() throws {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        guard ["avx512f", "avx512bw", "avx512vl"].allSatisfy({ cpu.contains(" \($0)") }) else {
            throw XCTSkip("the reference figures were recorded on an AVX-512 CPU; on this CPU record them again (see the comment above)")
        }
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/reference-015f34a.json")
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture)) as! [String: Any]
        let configurations = reference["configurations"] as! [String: [String]]
        let figures = reference["figures"] as! [String: [String: [String: [[String: Any]]]]]
        XCTAssertEqual(figures.keys.sorted(), ["Haswell", "SkylakeX"])
        for (core, runs) in figures.sorted(by: { $0.key < $1.key }) {
            for (name, expected) in runs.sorted(by: { $0.key < $1.key }) {
                let store = directory + "/\(core)-\(name).sqlite", json = directory + "/\(core)-\(name).json"
                // 015f34a's defaults, which the recorded figures are of: a slot per tensor (today's
                // default for block-wise runs is --arena smallest) and a 2 MiB page cache (today 1 MiB).
                let then = configurations[name]!.contains("--store-cache") ? ["--arena", "slots"] : ["--arena", "slots", "--store-cache", "2MiB"]
                let result = try run(["train"] + configurations[name]! + then + ["--store", store, "--report", directory + "/r", "--json", json],
                                     environment: ["OPENBLAS_CORETYPE": core])
                XCTAssertEqual(result.code, 0, "\(core) \(name): " + result.err)
                let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
                let modules = (report["modules"] as! [[String: Any]]).map { $0["evaluation"] as! [String: Any] }
                XCTAssertEqual(modules.count, expected["modules"]!.count, "\(core) \(name)")
                for (measured, recorded) in zip(modules, expected["modules"]!) {
                    for (key, value) in recorded where key != "trainerPeakBytes" {
                        XCTAssertEqual("\(measured[key] ?? "nil")", "\(value)", "\(core) \(name) module \(recorded["module"]!) \(key)")
                    }
                    let breakdown = measured["peakBreakdown"] as! [String: Int]
                    XCTAssertEqual((measured["peakBytes"] as! Int) - (breakdown["storeEngine"] ?? 0), recorded["trainerPeakBytes"] as! Int,
                                   "\(core) \(name) module \(recorded["module"]!) trainer peak")
                }
                let epochs = report["epochs"] as! [[String: Any]]
                XCTAssertEqual(epochs.count, expected["epochs"]!.count, "\(core) \(name)")
                for (measured, recorded) in zip(epochs, expected["epochs"]!) {
                    for (key, value) in recorded {
                        XCTAssertEqual("\(measured[key] ?? "nil")", "\(value)", "\(core) \(name) module \(recorded["module"]!) epoch \(recorded["epoch"]!) \(key)")
                    }
                }
            }
        }
    }
}

import Foundation
import XCTest

/// Found by an adversarial review of the arena defaults and `--placed-workspace` (issue 19).
final class PlacedWorkspaceTests: CLITestCase {
    let small = ["--modules", "2", "--blocks", "1", "--width", "4", "--train-size", "200", "--test-size", "100", "--epochs", "1", "--batch-size", "20"]

    /// A block-wise technique planned from a resident `--procedure` takes its own default arena,
    /// as `plan --procedure sequential` does (it used to keep parallel's slots).
    func testABlockwiseTechniqueFromAResidentProcedureUsesItsDefaultArena() throws {
        func sequentialRow(_ extra: [String]) throws -> String {
            let result = try run(["plan", "--techniques", "sequential"] + small + extra)
            XCTAssertEqual(result.code, 0, result.out + result.err)
            return try XCTUnwrap(result.out.components(separatedBy: "\n").first { $0.hasPrefix("sequential ") }, result.out)
        }
        XCTAssertEqual(try sequentialRow(["--procedure", "parallel"]), try sequentialRow([]))
        XCTAssertNotEqual(try sequentialRow(["--procedure", "parallel"]), try sequentialRow(["--arena", "slots"]))
    }

    /// With `--placed-workspace` the layout decides the chunks, so a store resumes only under the
    /// layout it was trained with; without it, under any layout (they compute the same floats).
    func testAPlacedWorkspaceStoreResumesOnlyUnderItsLayout() throws {
        let store = directory + "/p.sqlite"
        let first = try run(["train"] + small + ["--placed-workspace", "--store", store, "--report", directory + "/r", "--quiet"])
        XCTAssertEqual(first.code, 0, first.err)
        let other = try run(["train"] + small + ["--placed-workspace", "--arena", "packed", "--store", store, "--report", directory + "/r", "--quiet"])
        XCTAssertEqual(other.code, 1, other.out + other.err)
        XCTAssertTrue(other.err.contains("different configuration") && other.err.contains("recomputesConvolutions"), other.err)
        let same = try run(["train"] + small + ["--placed-workspace", "--store", store, "--report", directory + "/r", "--quiet"])
        XCTAssertEqual(same.code, 0, same.err)
        let plain = directory + "/q.sqlite"
        XCTAssertEqual(try run(["train"] + small + ["--store", plain, "--report", directory + "/r", "--quiet"]).code, 0)
        let packed = try run(["train"] + small + ["--arena", "packed", "--store", plain, "--report", directory + "/r", "--quiet"])
        XCTAssertEqual(packed.code, 0, packed.err)
    }

    /// `--placed-workspace` beside `--arena packed` with a resident procedure: one message, the arena's.
    func testOneMessageForAPackedArenaWithAResidentProcedure() throws {
        let result = try run(["plan", "--procedure", "parallel", "--arena", "packed", "--placed-workspace"] + small)
        XCTAssertEqual(result.code, 2, result.out + result.err)
        XCTAssertTrue(result.err.contains("--arena packed applies to sequential and multilap"), result.err)
        XCTAssertFalse(result.err.contains("got --arena slots"), result.err)
    }
}

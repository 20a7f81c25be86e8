import BlockwiseData
import Foundation
import XCTest

/// Issue 17, as a user meets it: malformed data files, out-of-range options, damaged stores and
/// two writers. Every case must end in a clear error naming the file, option or table, with the
/// documented exit code (1 runtime failure, 2 usage error), never a crash or a silent change.
final class BadInputTests: CLITestCase {
    static let real = FashionMNIST.defaultDirectory
    /// A tiny but real run: 100 training and 100 test images, one epoch.
    let tiny = ["--modules", "2", "--blocks", "1", "--width", "4", "--train-size", "100", "--test-size", "100", "--epochs", "1",
                "--threads", "1", "--profile", "none", "--quiet"]

    /// An IDX file: magic 0x08 DD, the header's sizes as given, then `payload`.
    func writeIDX(_ path: String, dimensions: [UInt32], payload: [UInt8]) {
        var bytes: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        for size in dimensions { bytes += [UInt8(size >> 24), UInt8((size >> 16) & 0xFF), UInt8((size >> 8) & 0xFF), UInt8(size & 0xFF)] }
        FileManager.default.createFile(atPath: path, contents: Data(bytes + payload))
    }

    /// A data directory with the real training files and a test-images file of our making.
    func dataDirectory(_ name: String, testImages dimensions: [UInt32], payload: [UInt8]) throws -> String {
        let data = directory + "/" + name
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        for file in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            try FileManager.default.createSymbolicLink(atPath: data + "/" + file, withDestinationPath: Self.real + "/" + file)
        }
        writeIDX(data + "/t10k-images-idx3-ubyte", dimensions: dimensions, payload: payload)
        return data
    }

    func testMalformedIDXHeadersAreRefusedNamingTheFile() throws {
        let images = try IDXReader.read(Self.real + "/t10k-images-idx3-ubyte.gz", expectedDimensions: 3).bytes
        let cases: [(String, [UInt32], [UInt8], String)] = [
            // Header and size agree, but the images are 28x29: the model's 28x28 input would read past each image.
            ("wide", [10000, 28, 29], images + [UInt8](repeating: 0, count: 10000 * 28), "28x29"),
            // The header describes less than the file holds: every image would be misaligned.
            ("short", [10000, 27, 28], images, "does not describe the data"),
            ("huge", [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], images, "more than the 1024 MiB"),
            ("overflow", [1 << 31, 1 << 31, 4], images, "more than the 1024 MiB"),
            ("zero", [60000, 0, 0], [], "is 0"),
            ("empty", [0, 28, 28], [], "is 0"),
        ]
        for (name, dimensions, payload, expected) in cases {
            let data = try dataDirectory(name, testImages: dimensions, payload: payload)
            let result = try run(["train", "--data", data, "--store", directory + "/\(name).sqlite"] + tiny)
            XCTAssertEqual(result.code, 1, "\(name): \(result.err)")
            XCTAssertTrue(result.err.contains(data + "/t10k-images-idx3-ubyte"), "\(name) names the file: \(result.err)")
            XCTAssertTrue(result.err.contains(expected), "\(name): \(result.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/\(name).sqlite"), "\(name): refused before a store exists")
        }
    }

    func testSizesTheDataCannotGiveAreUsageErrors() throws {
        // A 10-image training file: --train-size 600 must not quietly train on 10.
        let data = directory + "/ten"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let train = try IDXReader.read(Self.real + "/train-images-idx3-ubyte.gz", expectedDimensions: 3).bytes
        let labels = try IDXReader.read(Self.real + "/train-labels-idx1-ubyte.gz", expectedDimensions: 1).bytes
        writeIDX(data + "/train-images-idx3-ubyte", dimensions: [10, 28, 28], payload: Array(train.prefix(10 * 784)))
        writeIDX(data + "/train-labels-idx1-ubyte", dimensions: [10], payload: Array(labels.prefix(10)))
        for file in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            try FileManager.default.createSymbolicLink(atPath: data + "/" + file, withDestinationPath: Self.real + "/" + file)
        }
        let few = try run(["train", "--data", data, "--store", directory + "/ten.sqlite"] + tiny.filter { $0 != "100" && $0 != "--train-size" && $0 != "--test-size" }
                          + ["--train-size", "600", "--test-size", "100"])
        XCTAssertEqual(few.code, 2, few.err)
        XCTAssertTrue(few.err.contains("--train-size 600") && few.err.contains("only 10"), few.err)
        for (arguments, expected) in [(["--train-size", "60001"], "--train-size 60001"), (["--test-size", "0"], "--test-size '0'"),
                                      (["--test-size", "10001"], "--test-size 10001"), (["--train-size", "lots"], "--train-size 'lots'"),
                                      (["--train-size", "-5"], "--train-size '-5'"), (["--store-cache", "12x"], "--store-cache")] {
            let result = try run(["train", "--store", directory + "/x.sqlite", "--profile", "none", "--quiet"] + arguments)
            XCTAssertEqual(result.code, 2, "\(arguments): \(result.err)")
            XCTAssertTrue(result.err.contains(expected), "\(arguments): \(result.err)")
        }
        // plan reads no data but refuses the same sizes (it used to plan 60000 samples for any bad size).
        for (arguments, expected) in [(["--train-size", "60001"], "--train-size 60001"), (["--train-size", "lots"], "--train-size 'lots'"),
                                      (["--test-size", "20000"], "--test-size")] {
            let result = try run(["plan", "--profile", "none"] + arguments)
            XCTAssertEqual(result.code, 2, "plan \(arguments): \(result.err)")
            XCTAssertTrue(result.err.contains(expected), "plan \(arguments): \(result.err)")
        }
    }

    func testEveryNumericOptionIsRangeCheckedBeforeAnythingRuns() throws {
        let cases: [([String], String)] = [
            (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "-1"], "--lr"), (["--tau", "inf"], "--tau"),
            (["--tau", "1e-45"], "--tau"), (["--tau", "-2"], "--tau"), (["--momentum", "nan"], "--momentum"),
            (["--weight-decay", "nan"], "--weight-decay"), (["--label-smoothing", "nan"], "--label-smoothing"),
            (["--init-gain", "nan"], "--init-gain"), (["--tau-schedule", "multipliers", "--multiplier-step", "nan"], "--multiplier-step"),
            (["--tau-schedule", "multipliers", "--lambda0", "inf"], "--lambda0"), (["--threads", "10000"], "--threads"),
            (["--threads", "0"], "--threads"), (["--width", "-3"], "--width"), (["--modules", "0"], "--modules"),
            (["--batch-size", "-1"], "--batch-size"), (["--epochs", "-2"], "--epochs"), (["--workspace", "0"], "--workspace"),
            (["--budget", "-5"], "--budget"), (["--profile", "rpi-zero-3"], "unknown profile 'rpi-zero-3'"),
        ]
        for (arguments, option) in cases {
            let store = directory + "/never.sqlite"
            let result = try run(["train", "--store", store, "--quiet"] + arguments)
            XCTAssertEqual(result.code, 2, "\(arguments): \(result.err)")
            XCTAssertTrue(result.err.contains(option), "\(arguments) names \(option): \(result.err)")
            XCTAssertFalse(result.err.contains("Missing value") || result.err.contains("EncodingError"), "\(arguments): \(result.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: store), "\(arguments): nothing ran")
        }
    }

    /// Issue 15 and 19's options: malformed pool sizes, the arena and its drawing where they do not
    /// apply, are refused with exit 2 naming the option.
    func testAugmentationAndArenaOptionsAreRefusedWhereTheyDoNotApply() throws {
        let small = ["--modules", "2", "--blocks", "1", "--width", "4", "--train-size", "100", "--test-size", "50", "--profile", "none"]
        let cases: [([String], String)] = [
            (["plan", "--augment", "crop=2", "--augmented-inputs", "pool=+2"], "pool=N"),
            (["plan", "--augment", "crop=2", "--augmented-inputs", "pool=02"], "pool=N"),
            (["plan", "--augment", "crop=2", "--augmented-inputs", "pool=0"], "pool=N"),
            (["train", "--augment", "crop=2", "--augmented-inputs", "pool=2", "--procedure", "parallel"], "--augmented-inputs pool=2"),
            (["train", "--arena", "packed", "--procedure", "e2e"], "--arena packed"),
            (["train", "--arena", "smallest", "--procedure", "parallel"], "--arena smallest"),
            (["train", "--arena", "tight"], "--arena"),
            (["plan", "--procedure", "parallel", "--arena-svg", directory + "/a.svg"], "--arena-svg"),
            (["plan", "--arena-module", "2"], "--arena-module"),
            (["plan", "--arena-svg", directory + "/a.svg", "--arena-module", "3"], "--arena-module"),
            (["plan", "--arena-svg", "/nonexistent-dir/a.svg"], "--arena-svg"),
            // Found by an adversarial try: malformed lists, and combinations that wrote nothing.
            (["plan", "--augment", "crop=2,,flip"], "--augment"),
            (["plan", "--augment", "flip,flip"], "--augment"),
            (["plan", "--augment", "crop=2,flip,"], "--augment"),
            (["plan", "--augment", "crop=2,crop=3"], "--augment"),
            (["plan", "--augment", " flip"], "--augment"),
            (["plan", "--augment", "crop=+2"], "--augment"),
            (["plan", "--augment", "none,flip"], "--augment"),
            (["plan", "--arena-svg", directory + "/a.svg", "--arena-module", "0"], "--arena-module"),
            (["plan", "--arena-svg", directory + "/a.svg", "--techniques", "sequential,e2e"], "--arena-svg"),
            (["plan", "--arena-svg", directory + "/a.svg", "--profile", "rpi-zero-2w,stm32f746-disco"], "--arena-svg"),
            (["plan", "--json", directory + "/a.json", "--profile", "rpi-zero-2w,stm32f746-disco"], "--json"),
            (["bench", "train", "--steps", "0"], "--steps"),
            (["bench", "train", "--widths", "0"], "--widths"),
            (["bench", "train", "--batch-size", "0"], "--batch-size"),
            (["bench", "train", "--pipeline-samples", "-5"], "--pipeline-samples"),
        ]
        for (arguments, option) in cases {
            // (A case's own --profile list is not overridden by the small model's `--profile none`.)
            let model = arguments.contains("--profile") ? Array(small.dropLast(2)) : small
            let result = try run(arguments + model + (arguments[0] == "train" ? ["--store", directory + "/never.sqlite", "--quiet"] : []))
            XCTAssertEqual(result.code, 2, "\(arguments): \(result.err)")
            XCTAssertTrue(result.err.contains(option), "\(arguments) names \(option): \(result.err)")
            XCTAssertFalse(result.err.contains("NSCocoaErrorDomain"), "\(arguments): \(result.err)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/a.svg"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/a.json"))
    }

    /// `plan` has no --store to compare its outputs with: none of them overwrites a database (a
    /// trained store, or the lock or journal beside it), which it used to do, printing "wrote".
    func testPlanNeverOverwritesAStore() throws {
        let store = try finishedStore("kept")
        let before = try Data(contentsOf: URL(fileURLWithPath: store))
        for (option, path) in [("--arena-svg", store), ("--json", store), ("--csv", store), ("--arena-svg", store + "-lock")] {
            let result = try run(["plan", option, path, "--profile", "none"])
            XCTAssertEqual(result.code, 2, "\(option) \(path): \(result.err)")
            XCTAssertTrue(result.err.contains(option) && result.err.contains("database"), result.err)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: store)), before)
        XCTAssertEqual(try run(["cache", "verify", "--store", store]).code, 0)
    }

    func testAMissingDirectorySaysSo() throws {
        let result = try run(["train", "--store", directory + "/no/such/dir/x.sqlite"] + tiny)
        XCTAssertEqual(result.code, 1)
        XCTAssertTrue(result.err.contains("the directory '\(directory!)/no/such/dir' does not exist"), result.err)
    }

    /// Finished tiny run; returns its store path.
    func finishedStore(_ name: String) throws -> String {
        let store = directory + "/\(name).sqlite"
        let result = try run(["train", "--store", store] + tiny)
        XCTAssertEqual(result.code, 0, result.err)
        return store
    }

    func copy(_ store: String, _ name: String, sql: String? = nil) throws -> String {
        let path = directory + "/\(name).sqlite"
        try FileManager.default.copyItem(atPath: store, toPath: path)
        if let sql {
            let shell = Process()
            shell.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            shell.arguments = ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit(); c.close()", path, sql]
            try shell.run()
            shell.waitUntilExit()
            XCTAssertEqual(shell.terminationStatus, 0, sql)
        }
        return path
    }

    func testVerifyFindsEveryKindOfDamageAndTrainRefusesIt() throws {
        let store = try finishedStore("clean")
        let clean = try run(["cache", "verify", "--store", store])
        XCTAssertEqual(clean.code, 0, clean.out + clean.err)
        XCTAssertTrue(clean.out.contains("every checksum matches, nothing is missing") && clean.out.contains("integrity_check ok"), clean.out)
        let cases: [(String, String, String, Bool)] = [
            ("flipped-checkpoint", "UPDATE checkpoints SET data = zeroblob(length(data)) WHERE module = 1 AND name LIKE '%unit1.conv.weight'",
             "fails its checksum", true),
            ("deleted-checkpoint", "DELETE FROM checkpoints WHERE module = 0 AND name LIKE '%unit2.bn.weight' AND kind = 'value'", "missing", true),
            ("deleted-row", "DELETE FROM features WHERE level = 1 AND split = 'train' AND row = 17", "99 rows", true),
            ("row-count", "UPDATE levels SET row_count = 99 WHERE level = 1 AND split = 'train'", "0..<99", true),
            ("broken-state", "UPDATE modules SET state = '{broken' WHERE module = 1", "modules.state of module 2", true),
            ("broken-metric", "UPDATE metrics SET log = 'nope' WHERE module = 0", "metrics.log of module 1", false),
        ]
        for (name, sql, expected, trainRefuses) in cases {
            let damaged = try copy(store, name, sql: sql)
            let verify = try run(["cache", "verify", "--store", damaged])
            XCTAssertEqual(verify.code, 1, "\(name): \(verify.out)")
            XCTAssertTrue(verify.out.contains("this store is damaged") && verify.out.contains(expected), "\(name): \(verify.out)")
            if trainRefuses {
                // Resuming must refuse, not train on (or report) something else.
                let train = try run(["train", "--store", damaged] + tiny)
                XCTAssertEqual(train.code, 1, "\(name): \(train.out)")
                XCTAssertTrue(train.err.contains("is damaged") && !train.err.contains("not a blockwise store"), "\(name): \(train.err)")
            }
        }
        // A file cut by one byte.
        let truncated = try copy(store, "truncated")
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: truncated))
        try handle.truncate(atOffset: try handle.seekToEnd() - 1)
        try handle.close()
        let verify = try run(["cache", "verify", "--store", truncated])
        XCTAssertEqual(verify.code, 1, verify.out)
        XCTAssertTrue(verify.out.contains("not a whole number of"), verify.out)
    }

    func testFreshReplacesADamagedStoreOrANonDatabaseButNeverAForeignDatabase() throws {
        let text = directory + "/notes.sqlite"
        FileManager.default.createFile(atPath: text, contents: Data("not a database\n".utf8))
        let refused = try run(["train", "--store", text] + tiny)
        XCTAssertEqual(refused.code, 1)
        XCTAssertTrue(refused.err.contains("does not start with SQLite's header"), refused.err)
        let replaced = try run(["train", "--store", text, "--fresh"] + tiny.filter { $0 != "--quiet" })
        XCTAssertEqual(replaced.code, 0, replaced.err)
        XCTAssertTrue(replaced.out.contains("was not a database") && replaced.out.contains("replaced it"), replaced.out)
        XCTAssertEqual(try run(["cache", "verify", "--store", text]).code, 0)

        // A blockwise store whose first page SQLite cannot read (its b-tree page type overwritten).
        let store = try finishedStore("good")
        let broken = try copy(store, "broken")
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: broken))
        try handle.seek(toOffset: 100)
        handle.write(Data([0xFF]))
        try handle.close()
        let damaged = try run(["train", "--store", broken] + tiny)
        XCTAssertEqual(damaged.code, 1)
        XCTAssertTrue(damaged.err.contains("is damaged"), damaged.err)
        let fresh = try run(["train", "--store", broken, "--fresh"] + tiny.filter { $0 != "--quiet" })
        XCTAssertEqual(fresh.code, 0, fresh.err)
        XCTAssertTrue(fresh.out.contains("was damaged") && fresh.out.contains("replaced it"), fresh.out)

        // Another application's database, even with a table named run and user_version 1.
        let foreign = try copy(store, "foreign", sql: "DROP TABLE features; DROP TABLE levels; DROP TABLE checkpoints; DROP TABLE modules; DROP TABLE metrics; DROP TABLE report; DROP TABLE run; CREATE TABLE run (id INTEGER, owner TEXT); INSERT INTO run VALUES (1, 'someone else'); PRAGMA user_version = 1;")
        let before = try Data(contentsOf: URL(fileURLWithPath: foreign))
        for extra in [[], ["--fresh"]] {
            let result = try run(["train", "--store", foreign] + extra + tiny)
            XCTAssertEqual(result.code, 1, "\(extra)")
            XCTAssertTrue(result.err.contains("another application's SQLite database"), result.err)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: foreign)), before, "never modified")
    }

    func testOneWriterPerStoreWhileReadersKeepWorking() throws {
        let store = directory + "/busy.sqlite"
        var long = tiny
        long[long.firstIndex(of: "--epochs")! + 1] = "400"  // long enough to be caught running
        let first = try start(["train", "--store", store] + long, log: directory + "/first.log")
        // Wait until the run holds the lock and has written level 0.
        var ready = false
        for _ in 0..<200 {
            if (try? run(["cache", "ls", "--store", store]))?.out.contains("modules:") == true { ready = true; break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertTrue(ready, "the first run started")
        for extra in [[], ["--fresh"]] {
            let second = try run(["train", "--store", store] + extra + long)
            XCTAssertEqual(second.code, 1, "\(extra): \(second.err)")
            XCTAssertTrue(second.err.contains("is being written by another process (pid \(first.processIdentifier) on host"), second.err)
        }
        let vacuum = try run(["cache", "vacuum", "--store", store])
        XCTAssertEqual(vacuum.code, 1)
        XCTAssertTrue(vacuum.err.contains("being written by another process"), vacuum.err)
        XCTAssertEqual(try run(["cache", "ls", "--store", store]).code, 0, "readers keep working")
        // Another spelling of the same file (a symbolic link) is the same store.
        let link = directory + "/link.sqlite"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: store)
        for command in [["train", "--store", link] + long, ["cache", "vacuum", "--store", link]] {
            let result = try run(command)
            XCTAssertEqual(result.code, 1, "\(command): \(result.err)")
            XCTAssertTrue(result.err.contains("being written by another process (pid \(first.processIdentifier)"), result.err)
        }
        // kill -9: the kernel releases the lock, and the next writer gets it.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let after = try run(["train", "--store", store, "--fresh"] + tiny)
        XCTAssertEqual(after.code, 0, after.err)
        XCTAssertEqual(try run(["cache", "verify", "--store", store]).code, 0)
    }

    /// Runs a Python snippet on a store (sqlite3 and zlib: to forge rows whose checksums match).
    func python(_ script: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, script)
    }

    /// Rewrites labels of level 1 train rows `rows` with checksums that match, so only the label
    /// checks can tell.
    let forgeLabels = """
        import sqlite3, struct, sys, zlib
        db = sqlite3.connect(sys.argv[1]); first, last, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        for rid, label, data in db.execute("SELECT id, label, data FROM features WHERE level = 1 AND split = 'train' AND row BETWEEN ? AND ?", (first, last)).fetchall():
            new = 10 if mode == 'outside' else (label + 1) % 10
            db.execute("UPDATE features SET label = ?, checksum = ? WHERE id = ?", (new, zlib.crc32(struct.pack('<i', new), zlib.crc32(data)), rid))
        db.commit()
        """

    func testLabelsOutsideTheClassesOrNotTheRunsAreDamage() throws {
        let store = try finishedStore("labels")
        for (name, first, last, mode, expected) in [("outside", 5, 5, "outside", "label 10"), ("shifted", 0, 49, "shifted", "labels are not the run's")] {
            let damaged = try copy(store, name)
            try python(forgeLabels, [damaged, "\(first)", "\(last)", mode])
            let verify = try run(["cache", "verify", "--store", damaged])
            XCTAssertEqual(verify.code, 1, "\(name): \(verify.out)")
            XCTAssertTrue(verify.out.contains(expected), "\(name): \(verify.out)")
            let train = try run(["train", "--store", damaged] + tiny)
            XCTAssertEqual(train.code, 1, "\(name): \(train.out)")
            XCTAssertTrue(train.err.contains("is damaged") && train.err.contains("label"), "\(name): \(train.err)")
        }
        // Read by the inspectors too: a label outside the classes is damage, not a crash.
        let outside = try copy(store, "outside-show")
        try python(forgeLabels, [outside, "5", "5", "outside"])
        let show = try run(["cache", "show", "--store", outside, "--level", "1", "--sample", "5"])
        XCTAssertEqual(show.code, 1, show.err)
        XCTAssertTrue(show.err.contains("label 10"), show.err)
    }

    func testOutputsThatWouldOverwriteTheStoreAreRefused() throws {
        let store = try finishedStore("precious")
        let link = directory + "/alias.sqlite"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: store)
        for command in [["cache", "export", "--store", store, "--level", "1", "--output", store],
                        ["cache", "export", "--store", store, "--level", "1", "--output", link],
                        ["cache", "show", "--store", store, "--level", "1", "--sample", "0", "--png", store],
                        ["train", "--store", store, "--json", link] + tiny, ["train", "--store", store, "--report", store] + tiny] {
            let result = try run(command)
            XCTAssertEqual(result.code, 2, "\(command): \(result.err)")
            XCTAssertTrue(result.err.contains("is the store itself"), "\(command): \(result.err)")
        }
        XCTAssertEqual(try run(["cache", "verify", "--store", store]).code, 0, "the store is untouched")
        // Option values the store cannot give are usage errors; an unfinished run is not.
        let sample = try run(["cache", "show", "--store", store, "--level", "1", "--sample", "100"])
        XCTAssertEqual(sample.code, 2, sample.err)
        XCTAssertTrue(sample.err.contains("--sample 100 is outside 0..<100") && sample.err.contains("blockwise cache show --help"), sample.err)
    }

    func testStorePathsThatCannotHoldAStore() throws {
        let empty = try run(["train", "--store", ""] + tiny)
        XCTAssertEqual(empty.code, 2, empty.err)
        XCTAssertTrue(empty.err.contains("--store needs a file name"), empty.err)
        for option in ["--json", "--report"] {
            let result = try run(["train", "--store", directory + "/x.sqlite", option, ""] + tiny)
            XCTAssertEqual(result.code, 2, "\(option): \(result.err)")
        }
        let fifo = directory + "/fifo.sqlite"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        for extra in [[], ["--fresh"]] {
            let result = try run(["train", "--store", fifo] + extra + tiny)  // used to block forever holding the lock
            XCTAssertEqual(result.code, 1, result.err)
            XCTAssertTrue(result.err.contains("not a regular file"), result.err)
        }
        let folder = directory + "/folder"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let result = try run(["train", "--store", folder] + tiny)
        XCTAssertEqual(result.code, 1)
        XCTAssertTrue(result.err.contains("is a directory"), result.err)
    }

    func testMoreDamageThatTrainAndTheReadersRefuse() throws {
        let store = try finishedStore("more")
        // A level whose shape is impossible: the readers used to crash (Illegal instruction, or a 800 GB allocation).
        let shape = try copy(store, "shape", sql: "UPDATE levels SET channels = -8 WHERE level = 1")
        for command in [["cache", "stats", "--level", "1"], ["cache", "show", "--level", "1", "--sample", "0"],
                        ["cache", "export", "--level", "1", "--output", directory + "/x.npy"]] {
            let result = try run(command + ["--store", shape])
            XCTAssertEqual(result.code, 1, "\(command): \(result.err)")
            XCTAssertTrue(result.err.contains("is damaged") && result.err.contains("shape"), "\(command): \(result.err)")
        }
        // No run record but modules: another configuration would reuse them.
        let orphan = try copy(store, "orphan", sql: "DELETE FROM run")
        var other = tiny
        other[other.firstIndex(of: "--width")! + 1] = "8"
        let reused = try run(["train", "--store", orphan] + other)
        XCTAssertEqual(reused.code, 1, reused.out)
        XCTAssertTrue(reused.err.contains("run record (table run) is missing"), reused.err)
        // An unfinished run has no report: a state of the store (exit 1), not a wrong option.
        let unfinished = try copy(store, "unfinished", sql: "DELETE FROM report")
        let report = try run(["report", "--store", unfinished])
        XCTAssertEqual(report.code, 1, report.err)
        XCTAssertTrue(report.err.contains("holds no finished run"), report.err)
    }

    func testADivergingRunStopsWithAMessage() throws {
        let result = try run(["train", "--store", directory + "/diverge.sqlite", "--modules", "1", "--blocks", "1", "--width", "8",
                              "--train-size", "600", "--test-size", "100", "--epochs", "2", "--lr", "100", "--threads", "1",
                              "--profile", "none", "--quiet"])
        XCTAssertEqual(result.code, 1, result.out + result.err)
        XCTAssertTrue(result.err.contains("diverged in epoch") && result.err.contains("lower --lr"), result.err)
        XCTAssertFalse(result.err.contains("EncodingError"), result.err)
    }
}

import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// Checks everything a store holds (`blockwise cache verify`): SQLite's own `integrity_check`,
/// the run record, every level's rows against its metadata and the run's data, every feature
/// row's checksum and size, every module's saved state and checkpoint tensors (complete, the
/// right size, checksums), the metrics and the saved report. Read-only.
public enum StoreVerifier {
    public struct CorruptRow: Codable, Sendable, Equatable { public var level: Int; public var split: String; public var row: Int }

    public struct Report: Codable, Sendable {
        /// Feature rows whose checksum was recomputed.
        public var checkedRows = 0
        /// Feature rows whose checksum or size does not match.
        public var corrupt: [CorruptRow] = []
        public var levels = 0
        public var checkpointTensors = 0
        public var modules = 0
        public var metrics = 0
        /// Everything else found wrong, one line each ("level 1 train: 599 rows, 600 in its metadata").
        public var problems: [String] = []
        public var integrityCheck = "not run"

        public var isClean: Bool { corrupt.isEmpty && problems.isEmpty }
    }

    /// Runs every check; a check SQLite cannot complete becomes a problem, and the others still run.
    public static func verify(_ store: FeatureStore) throws -> Report {
        var report = Report()
        let db = store.database
        func attempt(_ what: String, _ body: () throws -> Void) {
            do { try body() } catch { report.problems.append("\(what): \(error)") }
        }
        attempt("SQLite integrity_check") {
            let statement = try db.prepare("PRAGMA integrity_check(20)")
            var lines: [String] = []
            while try statement.step() { lines.append(statement.string(0)) }
            report.integrityCheck = lines == ["ok"] ? "ok" : "\(lines.count) problems"
            if lines != ["ok"] { report.problems += lines.map { "SQLite integrity_check: \($0)" } }
        }
        attempt("file size") {
            // SQLite reads a short last page as if it were whole: a file cut by a few bytes can
            // pass integrity_check, so its length is checked against the page size.
            let pageSize = try db.integer("PRAGMA page_size") ?? 4096
            let fileBytes = StoreFile.fileSize(store.path)
            if pageSize > 0 && fileBytes % pageSize != 0 {
                report.problems.append("file size: \(fileBytes) bytes is not a whole number of \(pageSize)-byte pages (the file was truncated or appended to)")
            }
        }
        var identity: FeatureStore.RunIdentity?
        attempt("run record (table run)") {
            let count = try db.integer("SELECT count(*) FROM run") ?? 0
            if count == 0 {
                if try db.integer("SELECT count(*) FROM levels") ?? 0 > 0 { report.problems.append("run record (table run): missing, but the store holds levels") }
                return
            }
            identity = try store.storedIdentity()
            if let identity, let stored = try db.prepare("SELECT fingerprint FROM run WHERE id = 1").firstString(),
               stored != FeatureStore.fingerprint(identity) {
                report.problems.append("run record (table run): fingerprint \(stored) is not the configuration's (\(FeatureStore.fingerprint(identity)))")
            }
        }
        attempt("levels") { try checkLevels(store, identity: identity, into: &report) }
        attempt("feature rows") { try checkRows(store, identity: identity, into: &report) }
        attempt("modules and checkpoints") { try checkModules(store, identity: identity, into: &report) }
        attempt("metrics") {
            let statement = try db.prepare("SELECT log, module, lap, epoch FROM metrics ORDER BY lap, module, epoch")
            while try statement.step() {
                report.metrics += 1
                do {
                    _ = try store.decodeStored(EpochLog.self, statement.string(0), what: "metrics.log of module \(statement.int(1) + 1) lap \(statement.int(2) + 1) epoch \(statement.int(3) + 1)")
                } catch StoreError.damaged(_, let what) { report.problems.append(what) }
            }
        }
        attempt("saved report (table report)") {
            if let json = try store.savedReport(), (try? JSONSerialization.jsonObject(with: Data(json.utf8))) == nil {
                report.problems.append("saved report (table report): not valid JSON")
            }
        }
        return report
    }

    /// Each level: its rows exactly 0..<row_count, row_count what the run's data says, no rows
    /// without a level.
    static func checkLevels(_ store: FeatureStore, identity: FeatureStore.RunIdentity?, into report: inout Report) throws {
        let db = store.database
        let levels = try db.prepare("SELECT level, split, row_count, complete FROM levels ORDER BY level, split")
        var known = Set<Int64>()
        while try levels.step() {
            report.levels += 1
            let level = levels.int(0), splitName = levels.string(1), rowCount = levels.int(2)
            guard let split = Split(rawValue: splitName) else { report.problems.append("level \(level): unknown split '\(splitName)'"); continue }
            known.insert(FeatureStore.rowID(level: level, split: split, row: 0))
            let (count, first, last) = try store.rowSpan(level: level, split: split)
            if levels.int(3) == 1 {
                if count != rowCount || (count > 0 && (first != 0 || last != rowCount - 1)) {
                    report.problems.append("level \(level) \(splitName): table features holds \(count) rows"
                        + (count > 0 ? " (\(first)...\(last))" : "") + ", its metadata says rows 0..<\(rowCount)")
                }
                if let identity {
                    let data = identity.data
                    let rows = identity.configuration.levelRows(level, split: split, samples: split == .train ? data.trainCount : data.testCount)
                    if rowCount != rows {
                        report.problems.append("level \(level) \(splitName): \(rowCount) rows in its metadata, the run needs \(rows)")
                    }
                }
            } else if count > rowCount {
                report.problems.append("level \(level) \(splitName) (being written): \(count) rows, more than its \(rowCount)")
            }
        }
        if let identity {
            let both = try db.prepare("SELECT level FROM levels WHERE complete = 1 GROUP BY level HAVING count(*) = 2 ORDER BY level")
            var levelsWithBoth: [Int] = []
            while try both.step() { levelsWithBoth.append(both.int(0)) }
            for level in levelsWithBoth where try store.labelsMismatch(level: level, identity: identity) != nil {
                report.problems.append("level \(level): its labels are not the run's (their checksum differs from the run record's)")
            }
        }
        let orphans = try db.prepare("SELECT DISTINCT level, split FROM features")
        while try orphans.step() {
            guard let split = Split(rawValue: orphans.string(1)) else { continue }
            if !known.contains(FeatureStore.rowID(level: orphans.int(0), split: split, row: 0)) {
                report.problems.append("table features holds rows of level \(orphans.int(0)) \(orphans.string(1)), which table levels does not list")
            }
        }
    }

    /// Every feature row: its checksum, its size from its level's shape and encoding, its id.
    static func checkRows(_ store: FeatureStore, identity: FeatureStore.RunIdentity?, into report: inout Report) throws {
        var rowBytes: [String: Int] = [:]
        let levels = try store.database.prepare("SELECT level, split, channels, height, width, encoding FROM levels")
        while try levels.step() {
            let shape = [levels.int(2), levels.int(3), levels.int(4)]
            let name = "level \(levels.int(0)) \(levels.string(1))"
            guard FeatureStore.isValidSampleShape(shape) else {
                report.problems.append("\(name): the shape \(shape.map(String.init).joined(separator: "x")) in table levels"); continue
            }
            guard let encoding = FeatureEncoding(rawValue: levels.string(5)) else {
                report.problems.append("\(name): unknown encoding '\(levels.string(5))' in table levels"); continue
            }
            if let identity, encoding != identity.encoding {
                report.problems.append("\(name): encoding \(encoding.rawValue), the run's features are \(identity.encoding.rawValue)")
            }
            rowBytes["\(levels.int(0)).\(levels.string(1))"] = shape.reduce(1, *) * encoding.bytesPerValue
        }
        let classes = identity?.configuration.model.classes ?? 65536
        var badLabels = 0
        let statement = try store.database.prepare("SELECT level, split, row, label, checksum, data, id FROM features ORDER BY id")
        while try statement.step() {
            report.checkedRows += 1
            let blob = statement.blob(5)
            var sum = checksum(blob)
            sum = withUnsafeBytes(of: Int32(truncatingIfNeeded: statement.int(3)).littleEndian) { checksum($0, seed: sum) }
            let level = statement.int(0), split = statement.string(1), row = statement.int(2)
            let expectedBytes = rowBytes["\(level).\(split)"]
            let idMatches = Split(rawValue: split).map { Int64(statement.int(6)) == FeatureStore.rowID(level: level, split: $0, row: row) } ?? false
            if sum != UInt32(truncatingIfNeeded: statement.int(4)) || (expectedBytes != nil && blob.count != expectedBytes) || !idMatches {
                report.corrupt.append(CorruptRow(level: level, split: split, row: row))
            }
            let label = statement.int(3)
            if label < 0 || label >= classes {
                if badLabels < 20 { report.problems.append("level \(level) \(split) sample \(row): label \(label), the run's classes are 0...\(classes - 1)") }
                badLabels += 1
            }
        }
        if badLabels > 20 { report.problems.append("and \(badLabels - 20) more samples with labels outside the run's classes") }
    }

    /// Every module's state decodes, and its checkpoint tensors are complete, sized and whole.
    static func checkModules(_ store: FeatureStore, identity: FeatureStore.RunIdentity?, into report: inout Report) throws {
        let db = store.database
        // Latest status per module (a later lap's row supersedes an earlier one).
        var latest: [Int: (lap: Int, status: String)] = [:]
        var recorded: [(module: Int, lap: Int, status: String)] = []
        let modules = try db.prepare("SELECT module, lap, status, state, evaluation, epochs_done FROM modules ORDER BY module, lap")
        while try modules.step() {
            report.modules += 1
            let module = modules.int(0), lap = modules.int(1), status = modules.string(2), epochsDone = modules.int(5)
            let what = "modules.state of module \(module + 1) lap \(lap + 1)"
            if let configuration = identity?.configuration, module >= 0, module < configuration.model.modules,
               !(0...configuration.epochsPerLap(module: module)).contains(epochsDone) {
                report.problems.append("module \(module + 1) lap \(lap + 1): \(epochsDone) epochs done in table modules, it trains \(configuration.epochsPerLap(module: module))")
            }
            do {
                switch status {
                case "complete":
                    let completed = try store.decodeStored(CompletedModule.self, modules.string(3), what: what)
                    _ = try store.decodeStored(ModuleEvaluation.self, modules.string(4), what: "modules.evaluation of module \(module + 1) lap \(lap + 1)")
                    let metrics = try db.integer("SELECT count(*) FROM metrics WHERE module = ? AND lap = ?", [module, lap]) ?? 0
                    if metrics != completed.logs.count {
                        report.problems.append("module \(module + 1) lap \(lap + 1): \(metrics) rows in table metrics, its state records \(completed.logs.count) epochs")
                    }
                    if identity?.configuration.procedure == .sequential {
                        for split in ["train", "test"] where try db.integer("SELECT complete FROM levels WHERE level = ? AND split = ?", [module + 1, split]) != 1 {
                            report.problems.append("module \(module + 1) is complete but its output level \(module + 1) \(split) is not")
                        }
                    }
                case "training":
                    _ = try store.decodeStored(EpochCheckpoint.self, modules.string(3), what: what)
                default:
                    report.problems.append("module \(module + 1) lap \(lap + 1): unknown status '\(status)'")
                }
            } catch StoreError.damaged(_, let message) { report.problems.append(message) }
            latest[module] = (lap, status)
            recorded.append((module, lap, status))
        }
        // Each tensor: checksum and size against its shape. Keyed by module and lap (format 2;
        // a version-1 file's rows belong to their module's latest lap).
        var saved: [Int: [Int: [String: [String: Int]]]] = [:]  // module -> lap -> kind -> name -> values
        var shapes: [String: String] = [:]
        let tensors = try db.prepare("SELECT module, \(store.checkpointLapColumn), name, kind, shape, checksum, data FROM checkpoints ORDER BY module, 2, kind, name")
        while try tensors.step() {
            report.checkpointTensors += 1
            let module = tensors.int(0), lap = tensors.int(1), name = tensors.string(2), kind = tensors.string(3)
            let blob = tensors.blob(6)
            let shape = tensors.string(4)
            let which = "checkpoint \(name) (\(kind)) of module \(module + 1) lap \(lap + 1)"
            // The shape text is parsed as the resume parses it (no product that can overflow).
            let declared = FeatureStore.shapeCount(shape)
            if checksum(blob) != UInt32(truncatingIfNeeded: tensors.int(5)) {
                report.problems.append("\(which): fails its checksum")
            } else if let declared, blob.count % 4 != 0 || blob.count / 4 != declared {
                report.problems.append("\(which): \(blob.count) bytes, its shape \(shape) needs \(declared) floats")
            } else if declared == nil {
                report.problems.append("\(which): its shape '\(shape)' is not a shape")
            }
            saved[module, default: [:]][lap, default: [:]][kind, default: [:]][name] = blob.count / 4
            shapes["\(module).\(lap).\(kind).\(name)"] = shape
        }
        guard let model = identity?.configuration.model else { return }
        for (module, laps) in saved.sorted(by: { $0.key < $1.key }) {
            let known = Set((module >= 0 && module < model.modules ? ResNetModule.parameterSpecs(configuration: model, index: module) : []).map(\.name))
            for (lap, kinds) in laps.sorted(by: { $0.key < $1.key }) {
                for (kind, names) in kinds.sorted(by: { $0.key < $1.key }) {
                    if kind != "value" && kind != "momentum" { report.problems.append("checkpoints of module \(module + 1) lap \(lap + 1): unknown kind '\(kind)'") }
                    for name in names.keys.sorted() where !known.contains(name) {
                        report.problems.append("checkpoint \(name) (\(kind)) of module \(module + 1) lap \(lap + 1): not a parameter of the model")
                    }
                }
            }
        }
        // What a module needs: its values (complete) and momentum too (training) at its latest
        // lap, and whole sets at every earlier lap that has any (a store migrated from format 1
        // has none for the laps before each module's latest).
        let needing = recorded.filter { state in latest[state.module]?.lap == state.lap || saved[state.module]?[state.lap] != nil }
        for state in needing.sorted(by: { ($0.module, $0.lap) < ($1.module, $1.lap) }) {
            let module = state.module
            guard module >= 0 && module < model.modules else {
                report.problems.append("module \(module + 1): the run has \(model.modules) modules")
                continue
            }
            let specs = ResNetModule.parameterSpecs(configuration: model, index: module)
            for kind in state.status == "training" ? ["value", "momentum"] : ["value"] {
                let have = saved[module]?[state.lap]?[kind] ?? [:]
                for spec in specs where kind == "value" || spec.isTrainable {
                    let expected = spec.shape.reduce(1, *)
                    let which = "checkpoint \(spec.name) (\(kind)) of module \(module + 1) lap \(state.lap + 1)"
                    if let count = have[spec.name] {
                        if count != expected { report.problems.append("\(which): \(count) values, the model needs \(expected)") }
                        else if let shape = shapes["\(module).\(state.lap).\(kind).\(spec.name)"], shape != "[\(expected)]" {
                            report.problems.append("\(which): shape '\(shape)', saved as '[\(expected)]'")
                        }
                    } else {
                        report.problems.append("\(which): missing (module \(state.status) in lap \(state.lap + 1))")
                    }
                }
            }
        }
    }
}

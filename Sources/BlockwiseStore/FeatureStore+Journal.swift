import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// Checkpoints, completed modules, metrics and the saved report (TrainingJournal).
extension FeatureStore {
    // MARK: checkpoints and metrics (TrainingJournal)

    public func completedModule(_ module: Int, lap: Int) throws -> CompletedModule? {
        let statement = try database.prepare("SELECT state FROM modules WHERE module = ? AND lap = ? AND status = 'complete'")
        try statement.bind([module, lap])
        guard try statement.step() else { return nil }
        var completed = try decodeStored(CompletedModule.self, statement.string(0), what: "modules.state of module \(module + 1) lap \(lap + 1)")
        completed.parameters = try loadParameters(module: module, lap: lap, kind: "value")
        return completed
    }

    public func frozenParameters(module: Int, lap: Int) throws -> [String: [Float]]? {
        let values = try loadParameters(module: module, lap: lap, kind: "value")
        guard !values.isEmpty else { return nil }
        // A frozen module's weights read from the device's storage: counted with the features.
        bytesRead += values.values.reduce(0) { $0 + 4 * $1.count }
        operations += values.count
        return values
    }

    public func epochCheckpoint(_ module: Int, lap: Int) throws -> EpochCheckpoint? {
        let statement = try database.prepare("SELECT state FROM modules WHERE module = ? AND lap = ? AND status = 'training'")
        try statement.bind([module, lap])
        guard try statement.step() else { return nil }
        var checkpoint = try decodeStored(EpochCheckpoint.self, statement.string(0), what: "modules.state of module \(module + 1) lap \(lap + 1)")
        checkpoint.parameters = try loadParameters(module: module, lap: lap, kind: "value")
        checkpoint.momentum = try loadParameters(module: module, lap: lap, kind: "momentum")
        return checkpoint
    }

    public func saveEpochCheckpoint(_ checkpoint: EpochCheckpoint) throws {
        var light = checkpoint
        light.parameters = [:]
        light.momentum = [:]
        let state = String(decoding: try FeatureStore.encoder().encode(light), as: UTF8.self)
        try database.transaction {
            try saveParameters(module: checkpoint.module, lap: checkpoint.lap, kind: "value", checkpoint.parameters)
            try saveParameters(module: checkpoint.module, lap: checkpoint.lap, kind: "momentum", checkpoint.momentum)
            try database.prepare("INSERT OR REPLACE INTO modules (module, lap, status, epochs_done, state) VALUES (?, ?, 'training', ?, ?)")
                .run([checkpoint.module, checkpoint.lap, checkpoint.epochsDone, state])
            if let log = checkpoint.logs.last { try saveMetric(log) }
        }
        try accountEngineMemory()
    }

    public func saveCompletedModule(_ completed: CompletedModule) throws {
        var light = completed
        light.parameters = [:]
        let encoder = FeatureStore.encoder()
        let state = String(decoding: try encoder.encode(light), as: UTF8.self)
        let evaluation = String(decoding: try encoder.encode(completed.evaluation), as: UTF8.self)
        try database.transaction {
            // A completed module keeps its values (a later lap starts from them); its momentum is done with.
            try database.prepare("DELETE FROM checkpoints WHERE module = ? AND lap = ? AND kind = 'momentum'").run([completed.module, completed.lap])
            try saveParameters(module: completed.module, lap: completed.lap, kind: "value", completed.parameters)
            try database.prepare("INSERT OR REPLACE INTO modules (module, lap, status, epochs_done, state, evaluation) VALUES (?, ?, 'complete', ?, ?, ?)")
                .run([completed.module, completed.lap, completed.logs.count, state, evaluation])
            for log in completed.logs { try saveMetric(log) }
        }
        try accountEngineMemory()
    }

    func saveMetric(_ log: EpochLog) throws {
        let json = String(decoding: try FeatureStore.encoder().encode(log), as: UTF8.self)
        try database.prepare("""
            INSERT OR REPLACE INTO metrics (module, lap, epoch, task_loss, kinetic_energy, train_accuracy, learning_rate, transport_weight, log)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).run([log.module, log.lap, log.epoch, log.taskLoss, log.kineticEnergy, log.trainAccuracy, log.learningRate,
                      log.transportWeight, json])
    }

    /// Writes module `module`'s tensors of `kind` (value, momentum) for lap `lap`.
    func saveParameters(module: Int, lap: Int, kind: String, _ values: [String: [Float]]) throws {
        let insert = try database.prepare("INSERT OR REPLACE INTO checkpoints (module, lap, name, kind, shape, checksum, data) VALUES (?, ?, ?, ?, ?, ?, ?)")
        for (name, array) in values.sorted(by: { $0.key < $1.key }) {
            try array.withUnsafeBytes { bytes in
                insert.reset()
                try insert.bind([module, lap, name, kind, "[\(array.count)]", Int(checksum(bytes))])
                try insert.bindBlob(6, bytes.baseAddress!, count: bytes.count)
                try insert.step()
            }
        }
    }

    /// Module `module`'s tensors of `kind` saved for lap `lap`, checked (checksum, whole floats, shape).
    func loadParameters(module: Int, lap: Int, kind: String) throws -> [String: [Float]] {
        let statement = try database.prepare("SELECT name, checksum, data, shape FROM checkpoints WHERE module = ? AND \(checkpointLapColumn) = ? AND kind = ?")
        try statement.bind([module, lap, kind])
        var result: [String: [Float]] = [:]
        while try statement.step() {
            let blob = statement.blob(2)
            guard checksum(blob) == UInt32(truncatingIfNeeded: statement.int(1)) else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) fails its checksum")
            }
            // SQLite's page memory need not be aligned for Float: copy the bytes.
            guard blob.count % 4 == 0 else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) has \(blob.count) bytes, not whole floats")
            }
            let declared = FeatureStore.shapeCount(statement.string(3))
            guard declared == blob.count / 4 else {
                throw StoreError.damaged(path: path, what: "checkpoint \(statement.string(0)) (\(kind)) of module \(module + 1) has \(blob.count / 4) values but the shape '\(statement.string(3))'")
            }
            var values = [Float](repeating: 0, count: blob.count / 4)
            values.withUnsafeMutableBytes { $0.copyMemory(from: blob) }
            result[statement.string(0)] = values
        }
        return result
    }

    /// The evaluations of the completed modules of the last lap recorded, in module order.
    public func evaluations() throws -> [ModuleEvaluation] {
        let statement = try database.prepare("SELECT evaluation, module, lap FROM modules WHERE status = 'complete' AND lap = (SELECT max(lap) FROM modules WHERE status = 'complete') ORDER BY module")
        var result: [ModuleEvaluation] = []
        while try statement.step() {
            result.append(try decodeStored(ModuleEvaluation.self, statement.string(0),
                                           what: "modules.evaluation of module \(statement.int(1) + 1) lap \(statement.int(2) + 1)"))
        }
        return result
    }

    /// Saves the run's report (JSON) so `blockwise report` can re-render it.
    public func saveReport(_ json: String) throws {
        try database.prepare("INSERT OR REPLACE INTO report (id, json) VALUES (1, ?)").run([json])
    }

    /// The saved report, if the run finished.
    public func savedReport() throws -> String? {
        let statement = try database.prepare("SELECT json FROM report WHERE id = 1")
        return try statement.step() ? statement.string(0) : nil
    }

    /// All epoch logs in order.
    public func epochLogs() throws -> [EpochLog] {
        let statement = try database.prepare("SELECT log, module, lap, epoch FROM metrics ORDER BY lap, module, epoch")
        var result: [EpochLog] = []
        while try statement.step() {
            result.append(try decodeStored(EpochLog.self, statement.string(0),
                                           what: "metrics.log of module \(statement.int(1) + 1) lap \(statement.int(2) + 1) epoch \(statement.int(3) + 1)"))
        }
        return result
    }
}

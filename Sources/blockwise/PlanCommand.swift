import ArgumentParser
import BlockwiseData
import BlockwiseDevice
import BlockwisePlan
import BlockwiseReports
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict each module's peak memory, whether it fits, the largest batch that fits, the store's size and the emulated time, without allocating or training.",
        discussion: """
        The predicted peaks are the buffers the runtime allocates (computed from the same layouts) \
        plus the store engine's bound; a real run's ledger measures the same figures.

        Examples:
          blockwise plan --profile stm32f746-disco --width 8 --batch-size 2 \\
              --workspace 2000 --store-cache 16KiB
          blockwise plan --profile rpi-zero-2w --modules 8 --width 32 --train-size 6000
          blockwise plan --profile phone-3gb --json plan.json
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var trainingOptions: TrainingOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: "Data set planned for: fashion-mnist (60000 training / 10000 test images) or mnist5k (4000 / 1000), as train takes it.")
    var dataset: String = "fashion-mnist"
    @Option(parsing: .unconditional, help: "Training samples: a count (600), a percentage (1%) or 'all'; the same default as train.")
    var trainSize: String = "20%"
    @Option(parsing: .unconditional, help: "Test samples: a count, a percentage or 'all'.")
    var testSize: String = "all"
    @Option(help: "Encoding of the stored features: fp32, fp16 or bf16.")
    var featureDtype: String = "fp32"
    @Option(parsing: .unconditional, help: "Bound on SQLite's page cache.")
    var storeCache: String = "1MiB"
    @Flag(help: "Plan for features kept in memory instead of the store.")
    var inMemory = false
    @Option(help: "Also write the plan as JSON to this file.")
    var json: String?
    @Option(help: ArgumentHelp("Also draw a module's training-phase arena as SVG to this file: one rectangle per tensor, operations on x, bytes on y (issue 19).",
                               valueName: "file.svg"))
    var arenaSvg: String?
    @Option(help: "The module --arena-svg draws (1 = the first; default: the one whose packed arena is largest).")
    var arenaModule: Int?
    @Option(help: "Also write the printed table as CSV to this file (exact bytes, seconds and joules; one row per module, or per profile with several).")
    var csv: String?

    func writeCSV(_ table: Table) throws {
        guard let csv else { return }
        do { try Data(table.csv.utf8).write(to: URL(fileURLWithPath: csv), options: .atomic) } catch { throw OutputFileError(path: csv, error: error) }
        print("wrote \(csv)")
    }
    @Option(help: ArgumentHelp("Find the largest value of this option whose plan fits the budget (the others as given), then plan at it.",
                               valueName: "width|modules|batch-size"))
    var maximize: String?
    @Option(help: ArgumentHelp("Plan the same configuration with each technique and print one table: peak, smallest budget, device time and energy, storage written.",
                               valueName: "e2e,e2e-recompute,e2e-paged,e2e-paged-activations,sequential,parallel"))
    var techniques: String?
    @Flag(help: "With --techniques: print only each technique's smallest budget (block-wise at micro-batches of 2).")
    var smallestBudget = false

    func run() throws {
        let model = try modelOptions.model(dataset: nil)
        let requested = try trainingOptions.configuration(model: model)
        try refusePagingInMemory(requested, inMemory: inMemory)
        guard let encoding = FeatureEncoding(rawValue: featureDtype) else { throw ValidationError("--feature-dtype must be fp32, fp16 or bf16") }
        // The data set's split sizes: plan reads no data, but it plans the counts train would use
        // and refuses the sizes train would refuse.
        let splits: (train: Int, test: Int, name: String)
        switch dataset {
        case "fashion-mnist": splits = (FashionMNIST.splitSizes.train, FashionMNIST.splitSizes.test, "Fashion-MNIST")
        case "mnist5k": splits = (MNIST5k.splitSizes.train, MNIST5k.splitSizes.test, "mnist5k")
        default: throw ValidationError("--dataset must be fashion-mnist or mnist5k (got '\(dataset)')")
        }
        let trainCount: Int, testCount: Int
        do {
            trainCount = try SubsetSize(parsing: trainSize, option: "--train-size").resolve(total: splits.train, option: "--train-size", split: "\(splits.name)'s training split")
            testCount = try SubsetSize(parsing: testSize, option: "--test-size").resolve(total: splits.test, option: "--test-size", split: "\(splits.name)'s test split")
        } catch DataError.badSubset(let message) {
            throw ValidationError(message)
        }
        let maximized: PlanParameter?
        if let maximize {
            guard let parameter = PlanParameter(rawValue: maximize) else {
                throw ValidationError("--maximize must be one of: \(PlanParameter.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(maximize)')")
            }
            maximized = parameter
        } else {
            maximized = nil
        }
        let cacheBytes = try parseSize(storeCache, option: "--store-cache", minimum: 1024)
        // Plan has no --store to compare its outputs with: none may overwrite a database.
        for (option, value) in [("--json", json), ("--csv", csv), ("--arena-svg", arenaSvg)] {
            guard let value else { continue }
            if value.isEmpty { throw ValidationError("\(option) needs a file name (got an empty one)") }
            if let reason = StoreFile.overwritesDatabase(value) {
                throw ValidationError("\(option) '\(value)' \(reason): pass another file name, or it would be overwritten")
            }
        }
        if arenaModule != nil && arenaSvg == nil { throw ValidationError("--arena-module picks the module --arena-svg draws: pass --arena-svg FILE too") }
        if let arenaModule, arenaModule < 1 || (maximize != PlanParameter.modules.rawValue && arenaModule > requested.model.modules) {
            throw ValidationError("--arena-module must be 1...\(requested.model.modules), a module of the model (got \(arenaModule))")
        }
        let profileCount = device.profile.split(separator: ",").count
        if profileCount > 1, let option = [("--arena-svg", arenaSvg), ("--json", json)].first(where: { $0.1 != nil })?.0 {
            throw ValidationError("\(option) writes one plan: not with several profiles (--profile \(device.profile)); "
                                  + "pass one profile, or --csv FILE for the table of all")
        }
        if techniques != nil && arenaSvg != nil {
            throw ValidationError("--arena-svg draws one block-wise plan's arena: not with --techniques (drop one)")
        }
        if let arenaSvg {
            if arenaSvg.isEmpty { throw ValidationError("--arena-svg needs a file name (e.g. --arena-svg arena.svg)") }
            if requested.procedure.keepsAllModulesResident {
                throw ValidationError("--arena-svg draws a block-wise module's arena (sequential or multilap; got --procedure \(requested.procedure.rawValue))")
            }
        }
        let fitPolicy = try device.fitPolicy()
        /// Whether `c` fits `budget`, and its peak: the same plan `train` resolves.
        func plan(_ c: TrainingConfiguration, budget: Int?, profile: DeviceProfile?) -> (fits: Bool, peak: Int, report: PlanReport?) {
            if c.procedure.keepsAllModulesResident {
                let total = ResidentPlan(configuration: c, trainCount: trainCount, testCount: testCount, budget: budget, profile: nil,
                                         cacheBytes: cacheBytes).peakBytes
                return (budget.map { total <= $0 } ?? true, total, nil)
            }
            let residence: FeatureResidence = inMemory ? .memory : .store(encoding: encoding, cacheBytes: cacheBytes)
            let report = PlanReport(configuration: c, trainCount: trainCount, testCount: testCount, residence: residence,
                                    budget: budget, profile: profile, encoding: encoding, fit: fitPolicy)
            return (report.fits, report.peakBytes, report)
        }

        // Several devices: one line each (`--profile a,b,c`).
        let names = device.profile.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if names.count > 1 {
            print("plan: \(model.summary); batch \(requested.batchSize); \(requested.procedure.rawValue); \(trainCount) train / \(testCount) test samples")
            var anyFits = false
            let rows = try names.map { name in
                let (profile, budget) = try device.resolve(profileName: name)
                return (name, profile, budget, plan(requested, budget: budget, profile: profile))
            }
            var table = Table([.init("profile", width: 18, csv: "profile"), .init("budget", width: 11, csv: "budget_bytes"),
                               .init("peak", width: 11, csv: "peak_bytes"), .init("fits", width: 6, csv: "fits")]
                              + (maximized.map { [.init("largest \($0.rawValue)", width: 16, csv: "largest_\($0.rawValue.replacingOccurrences(of: "-", with: "_"))")] } ?? [])
                              + [.init("device time", width: 16, csv: "device_seconds"), .init("energy", width: 0, csv: "device_joules")])
            // One unit per column (a column never mixes minutes with hours, or J with Wh).
            let costs = rows.compactMap { $0.3.report?.cost }
            let times = DurationColumn(costs.map(\.seconds)), energies = EnergyColumn(costs.map(\.energyJoules))
            for (name, profile, budget, result) in rows {
                anyFits = anyFits || result.fits
                var row: [Table.Cell] = [.init(profile?.name ?? name), budget.map { Table.Cell.bytes($0) } ?? .init("unlimited", value: ""),
                                         .bytes(result.peak), .init(result.fits ? "yes" : "NO", value: result.fits ? "true" : "false")]
                if let maximized {
                    let best = PlanSearch.largest(maximized, configuration: requested) { plan($0, budget: budget, profile: nil).fits }
                    row.append(.init(best.map(String.init) ?? "none", value: best.map(String.init) ?? ""))
                }
                let cost = result.report?.cost
                row += [.init(cost.map { times.format($0.seconds) } ?? "-", value: cost.map { String($0.seconds) } ?? ""),
                        .init(cost.map { energies.format($0.energyJoules) } ?? "-", value: cost.map { String($0.energyJoules) } ?? "")]
                table.append(row)
            }
            print(table.text)
            try writeCSV(table)
            if !anyFits { throw ExitCode(3) }
            return
        }

        let (profile, budget) = try device.resolve()
        if let techniques {
            let list: [Technique]
            do { list = try Technique.parse(techniques, modules: requested.model.modules) } catch let error as TechniqueError { throw ValidationError(error.message) }
            let residence: FeatureResidence = inMemory ? .memory : .store(encoding: encoding, cacheBytes: cacheBytes)
            let plans = list.map {
                TechniquePlan($0, base: requested, residence: residence, cacheBytes: cacheBytes, budget: budget, profile: profile,
                              trainCount: trainCount, testCount: testCount, encoding: encoding, fit: fitPolicy)
            }
            if smallestBudget {
                for plan in plans { print(pad(plan.label, 24) + formatBytes(plan.smallestBudget) + " (\(plan.smallestBudget) bytes)") }
            } else {
                print("plan: \(model.summary); batch \(requested.batchSize); \(trainCount) train / \(testCount) test samples"
                      + (profile.map { "; device \($0.name), budget \(budget.map(formatBytes) ?? "unlimited")" } ?? ""))
                print(TechniquePlan.table(plans).text)
                print("(block-wise: the largest module's peak with --fit \(fitPolicy.rawValue), features in the store; smallest budget at micro-batches of 2 "
                      + "with --fit microbatch. VanGL and TRGL plan alike; the end-to-end techniques train one loss and have no micro-batches)")
            }
            if let json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                do { try encoder.encode(plans).write(to: URL(fileURLWithPath: json)) } catch { throw OutputFileError(path: json, error: error) }
                print("wrote \(json)")
            }
            try writeCSV(TechniquePlan.table(plans))
            if let budget, !plans.contains(where: { $0.smallestBudget <= budget }) { throw ExitCode(3) }
            return
        }
        if smallestBudget { throw ValidationError("--smallest-budget goes with --techniques (e.g. --techniques e2e,sequential --smallest-budget)") }
        var configuration = requested
        if let maximized {
            guard budget != nil else { throw ValidationError("--maximize needs a budget: pass --profile NAME or --budget SIZE") }
            if let best = PlanSearch.largest(maximized, configuration: configuration, fits: { plan($0, budget: budget, profile: nil).fits }) {
                let over = best < maximized.range.upperBound ? plan(maximized.setting(best + 1, in: configuration), budget: budget, profile: nil).peak : nil
                print("maximize \(maximized.rawValue): the largest that fits the budget \(formatBytes(budget!)) is \(best)"
                      + (over.map { " (at \(best + 1) the peak would be \(formatBytes($0)))" } ?? " (the largest allowed)") + "; its plan:")
                configuration = maximized.setting(best, in: configuration)
            } else {
                // Its plan at the smallest value follows (with what would make it fit, and the
                // --json / --csv files); the exit code is 3.
                print("maximize \(maximized.rawValue): even \(maximized.range.lowerBound) does not fit the budget \(formatBytes(budget!)); its plan:")
                configuration = maximized.setting(maximized.range.lowerBound, in: configuration)
            }
        }
        if configuration.procedure.keepsAllModulesResident {
            // Every module is resident at once and nothing is cached between modules.
            let residentPlan = ResidentPlan(configuration: configuration, trainCount: trainCount, testCount: testCount, budget: budget, profile: profile,
                                            cacheBytes: cacheBytes)
            let resident = residentPlan.peak
            let keeps: String
            switch residentPlan.technique {
            case nil: keeps = "keeps all \(configuration.model.modules) modules resident (no feature cache)"
            case .recompute?: keeps = "recomputes each module's forward from its input (--recompute modules): every module's weights, gradients and momentum, all inputs, one module's activations"
            case .pageActivations?: keeps = "pages activations to the store (--page activations): every module's weights, gradients and momentum, one module's activations"
            case .pageActivationsAndWeights?: keeps = "pages activations and weights to the store (--page activations,weights): one module's weights, gradients, momentum and activations"
            }
            print("plan: \(configuration.model.summary); batch \(configuration.batchSize); \(trainCount) train / \(testCount) test samples; "
                  + "\(configuration.procedure.rawValue) \(keeps)")
            if let profile { print("device: \(profile.displayName); budget \(budget.map(formatBytes) ?? "unlimited")") }
            print("peak \(formatBytes(resident.total)) (\(resident.total) bytes; \(resident)): "
                  + (budget.map { resident.total <= $0 ? "fits the budget" : "does NOT fit the budget" } ?? "no budget"))
            if residentPlan.paging.storeOperations > 0 {
                print("paging: \(formatBytes(residentPlan.paging.storeBytesWritten)) written and \(formatBytes(residentPlan.paging.storeBytesRead)) read in "
                      + "\(residentPlan.paging.storeOperations) storage operations (SQLite writes about \(formatBytes(residentPlan.paging.storeFileBytesWritten)))")
                if let wear = residentPlan.wear {
                    print(wear.summary + " (the pages: \(formatBytes(residentPlan.paging.storeBytesHeld)))")
                    for warning in wear.warnings { print("warning: " + warning) }
                }
            }
            if let budget, resident.total > budget {
                // The module-by-module procedure keeps one module resident: how far that goes.
                var sequential = configuration
                sequential.procedure = .sequential
                sequential.setArenaLayout(.default(for: .sequential))
                let other = plan(sequential, budget: budget, profile: nil)
                print("with --procedure sequential the peak is \(formatBytes(other.peak))" + (other.fits ? ": fits" : ": still over (blockwise plan --procedure sequential ... says what else would change that)"))
            }
            print(String(format: "work: %.3f GFLOP", Double(residentPlan.flops) / 1e9) + (residentPlan.cost.map { cost in
                "; emulated \(profile!.name): \(cost.breakdownText)" } ?? ""))
            if let json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                do { try encoder.encode(residentPlan).write(to: URL(fileURLWithPath: json)) } catch { throw OutputFileError(path: json, error: error) }
                print("wrote \(json)")
            }
            try writeCSV(residentPlan.table())
            // A plan that does not fit exits 3, as train would: a script can gate on it.
            if let budget, resident.total > budget { throw ExitCode(3) }
            return
        }
        let report = plan(configuration, budget: budget, profile: profile).report!
        print("plan: \(configuration.model.summary); batch \(configuration.batchSize); \(trainCount) train / \(testCount) test samples; "
              + (inMemory ? "features in memory" : "features in the store (\(encoding.rawValue), page cache \(storeCache))"))
        if let profile { print("device: \(profile.displayName); budget \(budget.map(formatBytes) ?? "unlimited")") }
        print(report.table().text)
        print("store size per level (train + test):")
        for level in report.levels {
            print("  level \(level.level) \(level.shape.map(String.init).joined(separator: "x")): fp32 \(formatBytes(level.bytes["fp32"]!)), fp16/bf16 \(formatBytes(level.bytes["fp16"]!))")
        }
        print(Plan.arenaText(report))
        if let arenaSvg { try writeArenaSVG(report, configuration: configuration, to: arenaSvg) }
        let microBatched = report.modules.contains { $0.microBatch != nil }
        let hopeless = report.modules.contains { !$0.fits && $0.largestBatch == nil }
        print("peak \(formatBytes(report.peakBytes)): " + (budget == nil ? "no budget" : (report.fits
            ? "fits the budget" + (microBatched ? " with micro-batches (--fit microbatch)" : "")
            : hopeless
                ? "does NOT fit the budget even at the smallest batch"
                : "does NOT fit the budget (train with --fit microbatch or a smaller --batch-size)")))
        if hopeless, let budget {
            // Every option that would change the outcome, by how much, at the smallest batch.
            let residence: FeatureResidence = inMemory ? .memory : .store(encoding: encoding, cacheBytes: cacheBytes)
            print(FitAdvice(configuration: configuration, residence: residence, budget: budget,
                            trainCount: trainCount, testCount: testCount, fit: fitPolicy).text)
        }
        if let cost = report.cost, let profile {
            print("device time by operation class on \(profile.name) (each class: its FLOPs at its rate or its bytes at the memory bandwidth, the longer):")
            let classes = DeviceCost.classTable(report.modules.compactMap { module in module.cost.map { ("\(module.number)", $0) } }).text
            for line in classes.split(separator: "\n") { print("  " + line) }
            print("emulated \(profile.name): \(cost.breakdownText)")
            let inference = report.modules.compactMap { module in module.inference.map { "module \(module.number) \(formatDuration($0.seconds))" } }
            print("one sample's forward pass (inference, eval mode) on \(profile.name): " + inference.joined(separator: ", "))
            if let wear = report.wear {
                print(wear.summary + " (\(formatBytes(cost.bytesWritten)) written by SQLite, planned)")
                for warning in wear.warnings { print("warning: " + warning) }
            }
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
        try writeCSV(report.table())
        // A plan that does not fit exits 3, as train would: a script can gate on it.
        if budget != nil && !report.fits { throw ExitCode(3) }
    }
}

extension Plan {
    /// `--arena-svg`: the training phase of `--arena-module` (or of the largest packed arena).
    func writeArenaSVG(_ report: PlanReport, configuration: TrainingConfiguration, to path: String) throws {
        let count = report.execution.modules.count
        if let arenaModule, !(1...count).contains(arenaModule) {
            throw ValidationError("--arena-module must be 1...\(count) (got \(arenaModule))")
        }
        let k = arenaModule.map { $0 - 1 } ?? report.modules.indices.max {
            (report.modules[$0].arenas.first?.packedBytes ?? 0) < (report.modules[$1].arenas.first?.packedBytes ?? 0)
        }!
        let phase = report.execution.modules[k].training
        // What --arena packed allocates (outputs computed again in the backward), beside today's slots.
        guard let lifetimes = phase.lifetimes(configuration: configuration.model, recomputingOutputs: true) else { return }
        let placement = ArenaPlacement(lifetimes)
        let slots = phase.slotPerTensor(configuration: configuration.model).breakdown.total - lifetimes.resident
        let svg = ArenaChart.svg(title: "Module \(k + 1) training arena, batch \(phase.options.batch): \(configuration.model.summary)",
                                 lifetimes: lifetimes, placement: placement, slotArenaBytes: slots)
        do { try svg.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw ValidationError("--arena-svg: cannot write \(path): \(describeFileError(error, path: path))")
        }
        print("wrote \(path)")
    }

    /// Each module phase's arena: today's slots, the packed arena, the liveness lower bound and
    /// the tensors live at the peak (issue 19).
    static func arenaText(_ report: PlanReport) -> String {
        let first = report.execution.modules.first?.training
        let packed = first?.placement != nil
        let mode = first?.options.recomputesConvolutions == true
            ? "--arena smallest: train allocates the packed arena, the blocks' first convolutions computed again"
            : "--arena packed: train allocates the packed arena"
        var lines = ["arena by tensor lifetimes (issue 19; " + (packed ? mode :
                        "--arena slots: train allocates every slot for the whole phase; --arena packed, the packed arena") + "):",
                     "  module  phase      slots       packed      lower bound  packed/bound  peak at: largest live tensors"]
        for module in report.modules {
            for arena in module.arenas {
                let live = arena.largestAtPeak.prefix(3).map { "\($0.tag) \(formatBytes($0.bytes))" }.joined(separator: ", ")
                lines.append("  " + pad("\(module.number)", 8) + pad(arena.phase.rawValue, 11) + pad(formatBytes(arena.slotBytes), 12)
                             + pad(formatBytes(arena.packedBytes), 12) + pad(formatBytes(arena.lowerBound), 13)
                             + pad(String(format: "%.3f", arena.ratio), 14) + arena.peakOperation + ": " + live)
            }
        }
        return lines.joined(separator: "\n")
    }
}

struct Profiles: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, show and validate device profiles.",
        discussion: """
        Examples:
          blockwise profiles
          blockwise profiles show stm32f746-disco
          blockwise profiles validate my-board.json
        """,
        subcommands: [ProfilesList.self, ProfilesShow.self, ProfilesValidate.self], defaultSubcommand: ProfilesList.self)
}

struct ProfilesList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The bundled profiles with their budgets.")
    @Flag(help: "Print the profiles as JSON (every field, and each one's budgetBytes) instead of the table.")
    var json = false
    @Flag(help: "Print the table as CSV (exact bytes) instead.")
    var csv = false
    func run() throws {
        let directory = DeviceProfile.profilesDirectory()
        if json {
            struct Entry: Encodable { var profile: DeviceProfile; var budgetBytes: Int; var origin: String }
            let entries = try DeviceProfile.bundledNames(directory: directory).map {
                let profile = try DeviceProfile.load($0, directory: directory)
                return Entry(profile: profile, budgetBytes: profile.budgetBytes, origin: DeviceProfile.origin(of: $0, directory: directory))
            }
            printJSON(entries)
            return
        }
        var table = Table([.init("name", width: 18, csv: "name"), .init("class", width: 7, csv: "class"), .init("RAM", width: 11, csv: "ram_bytes"),
                           .init("budget", width: 11, csv: "budget_bytes"), .init("3x3 GFLOP/s", width: 12, csv: "compute_gflops"),
                           .init("mem GB/s", width: 9, csv: "memory_gbps"),
                           .init("read MB/s", width: 10, csv: "storage_read_mbps"), .init("write MB/s", width: 12, csv: "storage_write_mbps"), .init("device", width: 0, csv: "device")])
        for name in DeviceProfile.bundledNames(directory: directory) {
            let p = try DeviceProfile.load(name, directory: directory)
            table.append([.init(p.name), .init(p.class), .bytes(p.ramBytes), .bytes(p.budgetBytes), .init(String(format: "%g", p.rates.convolutionGflops)),
                          .init(p.rates.memoryGBps.map { String(format: "%g", $0) } ?? "-"),
                          .init(String(format: "%g", p.storage.readMBps)), .init(String(format: "%g", p.storage.writeMBps)),
                          .init(p.displayName)])
        }
        if csv { print(table.csv, terminator: ""); return }
        print(table.text)
        let fromFiles = DeviceProfile.bundledNames(directory: directory).filter { !DeviceProfile.origin(of: $0, directory: directory).hasPrefix("(built in)") }
        print(fromFiles.isEmpty ? "(built into this binary; pass --profile PATH for your own file, or set BLOCKWISE_PROFILES to a directory of them)"
                                : "(from \(directory), the others built in; pass --profile PATH for your own file)")
    }
}

struct ProfilesShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "One profile's figures and their sources.")
    @Argument(help: "Profile name or path.")
    var name: String
    func run() throws {
        let p = try DeviceProfile.load(name)
        print("\(p.name): \(p.displayName) [\(p.class)]")
        print("  RAM \(formatBytes(p.ramBytes)), reserved \(formatBytes(p.reservedBytes)), training budget \(formatBytes(p.budgetBytes))")
        print("  storage: \(p.storage.medium), read \(p.storage.readMBps) MB/s, write \(p.storage.writeMBps) MB/s, latency \(p.storage.latencyMs) ms")
        let rates = p.rates
        print("  compute (Float32, sustained): 3x3 convolutions \(rates.convolutionGflops) GFLOP/s, GEMM \(rates.gemmGflops) GFLOP/s, "
              + "element-wise \(rates.elementwiseGflops) GFLOP/s; memory \(rates.memoryGBps.map { "\($0) GB/s" } ?? "unbounded (schema 1)")")
        print("  storage: " + (p.storage.overlapsCompute == true ? "overlaps computation (DMA)" : "does not overlap computation")
              + (p.storage.capacityBytes.map { ", capacity \(formatBytes($0))" } ?? "")
              + (p.storage.endurance.map { ", write endurance \(formatBytes($0))" } ?? ""))
        print("  power: active \(p.power.activeW) W, idle \(p.power.idleW) W (the storage wait is at \(p.storageWaitW) W)"
              + (p.schemaVersion < 2 ? "; schema 1: one rate for every class, no bandwidth bound, no overlap" : ""))
        print("  sources:")
        for s in p.sources { print("    \(s.field)\(s.value.map { " = \($0)" } ?? "")\(s.estimate ? " (estimate)" : ""): \(s.source)") }
        if let notes = p.notes { print("  notes: \(notes)") }
    }
}

struct ProfilesValidate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "validate", abstract: "Check a profile file; errors name the field and what was expected.")
    @Argument(help: "Path to a profile JSON file.")
    var file: String
    func run() throws {
        let p = try DeviceProfile.load(file: file)
        print("\(file): valid (\(p.name), budget \(formatBytes(p.budgetBytes)))")
    }
}

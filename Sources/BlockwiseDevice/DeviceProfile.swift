#if canImport(BlockwiseKernels)  // tools/fuzz/run compiles this file with SearchDirectories.swift in one module
import BlockwiseKernels
#endif
import Foundation

/// An emulated device: its memory, storage, compute rate and power (`profiles/*.json`).
public struct DeviceProfile: Codable, Equatable, Sendable {
    public struct Storage: Codable, Equatable, Sendable {
        public var medium: String
        /// Sustained sequential read and write, MB/s (1 MB = 10^6 bytes).
        public var readMBps: Double
        public var writeMBps: Double
        /// Latency of one storage operation, milliseconds.
        public var latencyMs: Double
        /// Schema 2: whether storage transfers run while the processor computes (DMA), so that
        /// only the storage time beyond the compute time is waited for (version 1: false).
        public var overlapsCompute: Bool?
        /// Schema 2: the medium's capacity in bytes.
        public var capacityBytes: Int?
        /// Schema 2: bytes that can be written before the medium wears out (TBW), or its
        /// program/erase cycles (endurance = cycles x capacity): one of the two.
        public var enduranceBytes: Int?
        public var peCycles: Double?

        /// The write endurance in bytes (nil in a version-1 profile).
        public var endurance: Int? {
            if let enduranceBytes { return enduranceBytes }
            if let peCycles, let capacityBytes { return Int(min(peCycles * Double(capacityBytes), Double(Int.max / 2))) }
            return nil
        }
    }
    /// Schema 2: sustained rates per operation class for our kernels (Float32).
    public struct Compute: Codable, Equatable, Sendable {
        /// 3x3 convolutions, GFLOP/s.
        public var convolutionGflops: Double
        /// Matrix products outside convolutions (linear layers, 1x1 convolutions), GFLOP/s.
        public var gemmGflops: Double
        /// Arithmetic of the element-wise and normalisation passes, GFLOP/s.
        public var elementwiseGflops: Double
        /// Sustained memory bandwidth, GB/s (10^9 bytes): bounds every class by the bytes it moves
        /// (nil: unbounded, version 1).
        public var memoryGBps: Double?

        public init(convolutionGflops: Double, gemmGflops: Double, elementwiseGflops: Double, memoryGBps: Double?) {
            self.convolutionGflops = convolutionGflops; self.gemmGflops = gemmGflops
            self.elementwiseGflops = elementwiseGflops; self.memoryGBps = memoryGBps
        }
    }
    public struct Power: Codable, Equatable, Sendable {
        public var activeW: Double
        public var idleW: Double
    }
    public struct Source: Codable, Equatable, Sendable {
        public var field: String
        public var value: Double?
        public var estimate: Bool
        public var source: String
    }

    public var schemaVersion: Int
    public var name: String
    public var displayName: String
    /// "mcu", "sbc" or "phone".
    public var `class`: String
    public var ramBytes: Int
    /// RAM taken by the OS / runtime: the training budget is ramBytes - reservedBytes.
    public var reservedBytes: Int
    public var storage: Storage
    /// Version 1: one sustained Float32 rate for all our kernels, GFLOP/s (version 2: `compute`).
    public var computeGflops: Double?
    /// Version 2: rates per operation class and memory bandwidth.
    public var compute: Compute?
    /// Active power while computing; idle power while waiting on storage that does not overlap
    /// computation (version 2; version 1 counts that wait at the active power).
    public var power: Power
    public var sources: [Source]
    public var notes: String?

    /// The newest schema this build reads; version 1 still loads (``rates``, ``storageWaitW``).
    public static let supportedSchemaVersion = 2
    /// The largest byte count a profile may give (1 PiB).
    public static let maximumBytes = 1 << 50

    /// The memory the trainer may use on this device.
    public var budgetBytes: Int { ramBytes - reservedBytes }

    /// The rates the cost model uses. A version-1 profile's one `computeGflops` serves every
    /// class, with no memory-bandwidth bound: its costs are those version 1 gave.
    public var rates: Compute {
        if let compute { return compute }
        let rate = computeGflops ?? 1
        return Compute(convolutionGflops: rate, gemmGflops: rate, elementwiseGflops: rate, memoryGBps: nil)
    }

    /// The power drawn while waiting on storage that does not overlap computation: the idle power
    /// in schema 2; the active power in version 1 (its energy was all time x active power).
    public var storageWaitW: Double { schemaVersion >= 2 ? power.idleW : power.activeW }
}

/// A malformed or missing profile: the file, the field and what was expected.
public enum ProfileError: Error, CustomStringConvertible, Equatable {
    case unknownName(String, known: [String])
    case unreadable(file: String, reason: String)
    case invalidField(file: String, field: String, expected: String)

    public var description: String {
        switch self {
        case .unknownName(let name, let known):
            return "unknown profile '\(name)'. Known profiles: \(known.joined(separator: ", ")); or pass a path to a JSON file."
        case .unreadable(let file, let reason):
            return "cannot read profile '\(file)': \(reason)"
        case .invalidField(let file, let field, let expected):
            return "profile '\(file)': field '\(field)' \(expected)"
        }
    }
}

extension DeviceProfile {
    /// The directory holding the bundled profiles: $BLOCKWISE_PROFILES, else `profiles/` next to
    /// the package (found from the executable's location or the current directory).
    public static func profilesDirectory() -> String {
        if let override = ProcessInfo.processInfo.environment["BLOCKWISE_PROFILES"] { return override }
        for candidate in checkoutSearchDirectories() {
            let path = candidate.appendingPathComponent("profiles").path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
               FileManager.default.fileExists(atPath: candidate.appendingPathComponent("Package.swift").path) {
                return path
            }
        }
        return "profiles"
    }

    /// Names of the profiles: those in `directory` and those the binary carries, sorted.
    public static func bundledNames(directory: String = profilesDirectory()) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }).union(BundledProfiles.files.keys).sorted()
    }

    /// Where the named profile comes from: its file in `directory` (so that an edit there counts),
    /// else the copy the binary carries (`tools/embed-profiles` makes it from `profiles/`).
    public static func origin(of name: String, directory: String = profilesDirectory()) -> String {
        let path = (directory as NSString).appendingPathComponent(name + ".json")
        return FileManager.default.fileExists(atPath: path) ? path : "(built in) \(name).json"
    }

    /// Loads a profile by name or by path (anything containing "/" or ending in .json). A name is
    /// looked up in `directory` first, then among the profiles the binary carries, so a copied or
    /// installed binary finds every bundled profile.
    public static func load(_ nameOrPath: String, directory: String = profilesDirectory()) throws -> DeviceProfile {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") { return try load(file: nameOrPath) }
        let path = (directory as NSString).appendingPathComponent(nameOrPath + ".json")
        if FileManager.default.fileExists(atPath: path) { return try load(file: path) }
        if let text = BundledProfiles.files[nameOrPath] { return try parse(Data(text.utf8), file: "(built in) \(nameOrPath).json") }
        throw ProfileError.unknownName(nameOrPath, known: bundledNames(directory: directory))
    }

    /// Parses and validates a profile file.
    public static func load(file: String) throws -> DeviceProfile {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ProfileError.unreadable(file: file, reason: "it is a directory; pass a profile's .json file")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ProfileError.unreadable(file: file, reason: FileManager.default.fileExists(atPath: file) ? "permission denied" : "no such file")
        }
        return try parse(data, file: file)
    }

    /// Parses and validates a profile's JSON; `file` names it in errors.
    public static func parse(_ data: Data, file: String) throws -> DeviceProfile {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw ProfileError.unreadable(file: file, reason: "not valid JSON (\(error.localizedDescription))")
        }
        if let duplicate = duplicateKey(in: data) {
            throw ProfileError.invalidField(file: file, field: duplicate, expected: "appears twice: JSON readers disagree on which one counts, keep one")
        }
        guard let fields = object as? [String: Any] else {
            throw ProfileError.unreadable(file: file, reason: "not a JSON object; see profiles/*.json for the fields")
        }
        // Unknown keys are refused: a misspelt field ("computeGFlops") would otherwise be ignored
        // and the bundled default-less field reported missing, or worse, an optional one dropped.
        let known: [String: Set<String>] = [
            "": ["schemaVersion", "name", "displayName", "class", "ramBytes", "reservedBytes", "storage", "computeGflops", "compute", "power", "sources", "notes"],
            "storage": ["medium", "readMBps", "writeMBps", "latencyMs", "overlapsCompute", "capacityBytes", "enduranceBytes", "peCycles"],
            "compute": ["convolutionGflops", "gemmGflops", "elementwiseGflops", "memoryGBps"], "power": ["activeW", "idleW"],
            "sources[]": ["field", "value", "estimate", "source"],
        ]
        func unknownKeys(_ object: [String: Any], _ scope: String) -> String? {
            for key in object.keys.sorted() where !(known[scope]?.contains(key) ?? true) {
                return (scope.isEmpty ? "" : scope + ".") + key
            }
            return nil
        }
        var unknown = unknownKeys(fields, "")
        for scope in ["storage", "compute", "power"] where unknown == nil {
            if let nested = fields[scope] as? [String: Any] { unknown = unknownKeys(nested, scope) }
        }
        if unknown == nil, let sources = fields["sources"] as? [[String: Any]] {
            for (index, entry) in sources.enumerated() where unknown == nil {
                unknown = unknownKeys(entry, "sources[]").map { $0.replacingOccurrences(of: "sources[]", with: "sources[\(index)]") }
            }
        }
        if let unknown {
            throw ProfileError.invalidField(file: file, field: unknown, expected: "is not a profile field (see profiles/*.json and the README's Device profiles)")
        }
        // Byte counts are checked before decoding: JSONDecoder reports 1.5 or 1e30 for an Int
        // field as "not valid JSON" without naming it.
        // Byte counts may be written with a unit ("512KiB", "320KB"), as --budget takes them.
        var data = data
        var withUnits = fields
        for field in ["ramBytes", "reservedBytes"] {
            guard let text = fields[field] as? String else { continue }
            guard let bytes = try? SizeParser.parse(text) else {
                throw ProfileError.invalidField(file: file, field: field, expected: "should be a number of bytes or a size such as 512KiB or 320KB (got '\(text)')")
            }
            withUnits[field] = bytes
        }
        var storageWithUnits = fields["storage"] as? [String: Any]
        for field in ["capacityBytes", "enduranceBytes"] {
            guard let text = storageWithUnits?[field] as? String else { continue }
            guard let bytes = try? SizeParser.parse(text) else {
                throw ProfileError.invalidField(file: file, field: "storage." + field, expected: "should be a number of bytes or a size such as 32GB or 64TB (got '\(text)')")
            }
            storageWithUnits?[field] = bytes
        }
        let storageHasUnits = ["capacityBytes", "enduranceBytes"].contains { (fields["storage"] as? [String: Any])?[$0] is String }
        if storageHasUnits { withUnits["storage"] = storageWithUnits }
        if withUnits.count == fields.count, storageHasUnits || ["ramBytes", "reservedBytes"].contains(where: { fields[$0] is String }) {
            data = try JSONSerialization.data(withJSONObject: withUnits)
        }
        let byteFields = [("ramBytes", withUnits["ramBytes"]), ("reservedBytes", withUnits["reservedBytes"]),
                          ("storage.capacityBytes", storageWithUnits?["capacityBytes"]), ("storage.enduranceBytes", storageWithUnits?["enduranceBytes"])]
        for (field, raw) in byteFields {
            guard let number = raw as? NSNumber, !(raw is Bool) else { continue }  // missing or not a number: decoding names it
            let value = number.doubleValue
            guard value.isFinite, value == value.rounded(), value >= 0, value <= Double(DeviceProfile.maximumBytes) else {
                throw ProfileError.invalidField(file: file, field: field,
                                                expected: "should be a whole number of bytes in 0...\(DeviceProfile.maximumBytes) (1 PiB) (got \(number))")
            }
        }
        let profile: DeviceProfile
        do {
            profile = try JSONDecoder().decode(DeviceProfile.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw ProfileError.invalidField(file: file, field: DeviceProfile.fieldName(context.codingPath + [key]),
                                            expected: "is missing")
        } catch let DecodingError.typeMismatch(type, context) {
            throw ProfileError.invalidField(file: file, field: DeviceProfile.fieldName(context.codingPath),
                                            expected: "should be a \(type == String.self ? "string" : (type == Bool.self ? "boolean" : "number"))")
        } catch let DecodingError.valueNotFound(_, context) {
            throw ProfileError.invalidField(file: file, field: DeviceProfile.fieldName(context.codingPath), expected: "is null")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            // A number JSON can hold but the field cannot: 1.5 or 1e30 bytes.
            throw ProfileError.invalidField(file: file, field: DeviceProfile.fieldName(context.codingPath),
                                            expected: "should be a whole number within 0...\(DeviceProfile.maximumBytes) (\(context.debugDescription))")
        } catch {
            throw ProfileError.unreadable(file: file, reason: "not valid JSON (\(error.localizedDescription))")
        }
        try profile.validate(file: file)
        return profile
    }

    /// The first key that appears twice in one JSON object of `data` ("power.idleW"), if any.
    /// A scan of valid JSON's structure: strings (with escapes), objects and arrays.
    static func duplicateKey(in data: Data) -> String? {
        let bytes = [UInt8](data)
        // One frame per open object or array: its keys so far and its name in the path.
        var frames: [(isObject: Bool, keys: Set<String>, name: String)] = []
        var index = 0
        var pendingKey: String?
        func path(_ key: String) -> String { (frames.map(\.name).filter { !$0.isEmpty } + [key]).joined(separator: ".") }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                var end = index + 1
                var text: [UInt8] = []
                while end < bytes.count && bytes[end] != UInt8(ascii: "\"") {
                    if bytes[end] == UInt8(ascii: "\\") { text.append(bytes[end]); end += 1 }
                    if end < bytes.count { text.append(bytes[end]) }
                    end += 1
                }
                var after = end + 1
                while after < bytes.count && [0x20, 0x09, 0x0A, 0x0D].contains(bytes[after]) { after += 1 }
                if let frame = frames.last, frame.isObject, after < bytes.count, bytes[after] == UInt8(ascii: ":") {
                    let key = String(decoding: text, as: UTF8.self)
                    if frame.keys.contains(key) { return path(key) }
                    frames[frames.count - 1].keys.insert(key)
                    pendingKey = key
                }
                index = end + 1
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                frames.append((byte == UInt8(ascii: "{"), [], pendingKey ?? ""))
                pendingKey = nil
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if !frames.isEmpty { frames.removeLast() }
            case UInt8(ascii: ","):
                pendingKey = nil
            default: break
            }
            index += 1
        }
        return nil
    }

    /// "sources[0].field" for a coding path (array elements by index, not "Index 0").
    static func fieldName(_ path: [CodingKey]) -> String {
        var name = ""
        for key in path {
            if let index = key.intValue { name += "[\(index)]" } else { name += (name.isEmpty ? "" : ".") + key.stringValue }
        }
        return name
    }

    /// The numeric fields a `sources` entry may describe, with their values.
    var describedFields: [String: Double] {
        var fields = ["ramBytes": Double(ramBytes), "reservedBytes": Double(reservedBytes), "storage.readMBps": storage.readMBps,
                      "storage.writeMBps": storage.writeMBps, "storage.latencyMs": storage.latencyMs,
                      "power.activeW": power.activeW, "power.idleW": power.idleW]
        if let computeGflops { fields["computeGflops"] = computeGflops }
        if let compute {
            fields["compute.convolutionGflops"] = compute.convolutionGflops
            fields["compute.gemmGflops"] = compute.gemmGflops
            fields["compute.elementwiseGflops"] = compute.elementwiseGflops
            if let bandwidth = compute.memoryGBps { fields["compute.memoryGBps"] = bandwidth }
        }
        if let overlaps = storage.overlapsCompute { fields["storage.overlapsCompute"] = overlaps ? 1 : 0 }
        if let capacity = storage.capacityBytes { fields["storage.capacityBytes"] = Double(capacity) }
        if let endurance = storage.enduranceBytes { fields["storage.enduranceBytes"] = Double(endurance) }
        if let cycles = storage.peCycles { fields["storage.peCycles"] = cycles }
        return fields
    }

    /// The figures schema 2 adds: each needs a `sources` entry.
    static let version2Fields = ["compute.convolutionGflops", "compute.gemmGflops", "compute.elementwiseGflops", "compute.memoryGBps",
                                 "storage.overlapsCompute", "storage.capacityBytes"]

    /// Checks ranges and relations between fields.
    public func validate(file: String) throws {
        func fail(_ field: String, _ expected: String) -> ProfileError { .invalidField(file: file, field: field, expected: expected) }
        guard (1...DeviceProfile.supportedSchemaVersion).contains(schemaVersion) else {
            throw fail("schemaVersion", "should be 1 or \(DeviceProfile.supportedSchemaVersion) (got \(schemaVersion))")
        }
        if schemaVersion == 1 {
            guard computeGflops != nil else { throw fail("computeGflops", "is missing (schema version 1 has one compute rate)") }
            if compute != nil { throw fail("compute", "is a schema-version-2 field: set schemaVersion to 2, or use computeGflops") }
            for (field, value) in [("overlapsCompute", storage.overlapsCompute as Any?), ("capacityBytes", storage.capacityBytes),
                                   ("enduranceBytes", storage.enduranceBytes), ("peCycles", storage.peCycles)] where value != nil {
                throw fail("storage." + field, "is a schema-version-2 field: set schemaVersion to 2 (and give compute, the storage's capacity and endurance)")
            }
        } else {
            if computeGflops != nil { throw fail("computeGflops", "is schema version 1's single rate: version 2 gives compute.convolutionGflops, gemmGflops, elementwiseGflops and memoryGBps") }
            guard let compute else { throw fail("compute", "is missing (schema version 2: convolutionGflops, gemmGflops, elementwiseGflops, memoryGBps)") }
            guard compute.memoryGBps != nil else { throw fail("compute.memoryGBps", "is missing (the memory bandwidth in GB/s)") }
            guard storage.overlapsCompute != nil else { throw fail("storage.overlapsCompute", "is missing (true when storage transfers run during computation, by DMA)") }
            guard let capacity = storage.capacityBytes else { throw fail("storage.capacityBytes", "is missing (the medium's capacity, e.g. \"32GB\")") }
            guard capacity > 0 else { throw fail("storage.capacityBytes", "should be positive (got \(capacity))") }
            switch (storage.enduranceBytes, storage.peCycles) {
            case (nil, nil): throw fail("storage.enduranceBytes", "is missing: give enduranceBytes (bytes written before wear-out, e.g. \"64TB\") or peCycles")
            case (.some, .some): throw fail("storage.peCycles", "and storage.enduranceBytes are both given: keep one")
            case (.some(let bytes), nil) where bytes <= 0: throw fail("storage.enduranceBytes", "should be positive (got \(bytes))")
            case (nil, .some(let cycles)) where !(cycles >= 1 && cycles <= 1e7): throw fail("storage.peCycles", "should be a number of cycles in [1, 1e7] (got \(cycles))")
            default: break
            }
        }
        guard !name.isEmpty else { throw fail("name", "should be a non-empty string") }
        guard ["mcu", "sbc", "phone"].contains(self.class) else { throw fail("class", "should be one of mcu, sbc, phone (got '\(self.class)')") }
        guard ramBytes > 0 && ramBytes <= DeviceProfile.maximumBytes else {
            throw fail("ramBytes", "should be a positive number of bytes up to \(DeviceProfile.maximumBytes) (1 PiB) (got \(ramBytes))")
        }
        guard reservedBytes >= 0 && reservedBytes < ramBytes else {
            throw fail("reservedBytes", "should be >= 0 and less than ramBytes \(ramBytes) (got \(reservedBytes))")
        }
        // Ranges wide enough for any device from a microcontroller to a workstation, narrow
        // enough that every time and energy the cost model derives from them is a sane number.
        var ranged: [(String, Double, ClosedRange<Double>, String)] = [
            ("storage.readMBps", storage.readMBps, 1e-3...1e6, "MB/s"), ("storage.writeMBps", storage.writeMBps, 1e-3...1e6, "MB/s"),
            ("storage.latencyMs", storage.latencyMs, 0...1e4, "ms"),
            ("power.activeW", power.activeW, 1e-6...1e4, "W"), ("power.idleW", power.idleW, 0...1e4, "W"),
        ]
        if let computeGflops { ranged.append(("computeGflops", computeGflops, 1e-6...1e6, "GFLOP/s")) }
        if let compute {
            ranged += [("compute.convolutionGflops", compute.convolutionGflops, 1e-6...1e6, "GFLOP/s"),
                       ("compute.gemmGflops", compute.gemmGflops, 1e-6...1e6, "GFLOP/s"),
                       ("compute.elementwiseGflops", compute.elementwiseGflops, 1e-6...1e6, "GFLOP/s")]
            if let bandwidth = compute.memoryGBps { ranged.append(("compute.memoryGBps", bandwidth, 1e-6...1e5, "GB/s")) }
        }
        for (field, value, range, unit) in ranged where !(value >= range.lowerBound && value <= range.upperBound) {
            throw fail(field, "should be a number of \(unit) in [\(range.lowerBound), \(range.upperBound)] (got \(value))")
        }
        guard power.idleW <= power.activeW else { throw fail("power.idleW", "should be between 0 and power.activeW") }
        guard !sources.isEmpty else { throw fail("sources", "should list where the figures come from") }
        let fields = describedFields
        for (index, entry) in sources.enumerated() {
            guard let value = fields[entry.field] else {
                throw fail("sources[\(index)].field", "should name a figure of the profile (\(fields.keys.sorted().joined(separator: ", "))), not '\(entry.field)'")
            }
            if let stated = entry.value, abs(stated - value) > 1e-9 * max(abs(value), 1) {
                throw fail("sources[\(index)].value", "is \(stated) but \(entry.field) is \(value): the source must describe the figure used")
            }
            guard !entry.source.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw fail("sources[\(index)].source", "should say where \(entry.field) comes from")
            }
        }
        if schemaVersion >= 2 {
            let described = Set(sources.map(\.field))
            let endurance = storage.enduranceBytes != nil ? "storage.enduranceBytes" : "storage.peCycles"
            for field in DeviceProfile.version2Fields + [endurance] where !described.contains(field) {
                throw fail("sources", "should have an entry for \(field) (estimate or measured, and where from)")
            }
        }
    }
}

/// Parses human sizes: "320KB", "48MiB", "1.5GB", "64TB", "4096" (bytes), up to 1 PiB. KB/MB/GB/TB
/// are decimal (10^3...), KiB/MiB/GiB/TiB binary (2^10...).
public enum SizeParser {
    public static func parse(_ text: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
                                         ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)]
        for (suffix, factor) in units where trimmed.lowercased().hasSuffix(suffix.lowercased()) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            if let value = Double(number), value >= 0, value.isFinite, value * factor <= Double(DeviceProfile.maximumBytes) { return Int((value * factor).rounded()) }
        }
        if let value = Int(trimmed), value >= 0 { return value }
        throw SizeError(text: text)
    }

    public struct SizeError: Error, CustomStringConvertible {
        public var text: String
        public var description: String { "cannot read the size '\(text)': use bytes (4096) or a unit: 320KB, 256KiB, 48MiB, 1.5GB" }
    }
}

import ArgumentParser
import BlockwiseKernels
import BlockwiseDevice
import BlockwisePlan

/// Budget and device options shared by train and plan.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Emulated device: a profile name (see blockwise profiles) or a path to a profile JSON file; 'none' for no device. plan takes several, comma-separated (one line each).")
    var profile: String = "rpi-zero-2w"
    @Option(parsing: .unconditional, help: "RAM budget (e.g. 320KB, 256KiB, 48MiB, 1.5GB); overrides the profile's RAM less its reserve.")
    var budget: String?
    @Option(help: "When a module does not fit at --batch-size: error (train stops before training; plan reports it) or microbatch (largest micro-batch that fits, gradients accumulated; plan shows those micro-batches).")
    var fit: String = "error"

    func fitPolicy() throws -> FitPolicy {
        guard let policy = FitPolicy(rawValue: fit) else { throw ValidationError("--fit must be error or microbatch (got '\(fit)')") }
        return policy
    }

    /// The profile (nil for 'none') and the budget in bytes (nil: unlimited).
    func resolve() throws -> (DeviceProfile?, Int?) { try resolve(profileName: profile) }

    /// The named profile (nil for 'none') and the budget on it (`--budget` wins).
    func resolve(profileName profile: String) throws -> (DeviceProfile?, Int?) {
        let loaded: DeviceProfile?
        do { loaded = profile == "none" ? nil : try DeviceProfile.load(profile) } catch let error as ProfileError {
            // An unknown name is a wrong option value (exit 2); a malformed file stays a file error (exit 1).
            if case .unknownName = error { throw ValidationError("--profile: \(error)") }
            throw error
        }
        if let budget {
            // Below 1 kB not even a module's parameters fit: a budget of 0 is a typo, not a plan.
            return (loaded, try parseSize(budget, option: "--budget", minimum: 1000))
        }
        return (loaded, loaded?.budgetBytes)
    }
}


/// A size option ("2MiB", "320KB") as bytes; malformed or below `minimum` is a usage error naming it.
func parseSize(_ text: String, option: String, minimum: Int = 0) throws -> Int {
    let bytes: Int
    do { bytes = try SizeParser.parse(text) } catch { throw ValidationError("\(option): \(error)") }
    guard bytes >= minimum else { throw ValidationError("\(option) must be at least \(formatBytes(minimum)) (got '\(text)')") }
    return bytes
}

import Foundation

/// How strongly each module's transport (kinetic-energy) term is weighted.
///
/// The local loss of module k is `CE + w_k * sum_blocks mean(r^2)` with `w_k = 1 / (2 tau_k)`
/// (Karkar et al., arXiv 2210.00949, eq. for the minimizing-movement step), or `w = 1 / lambda`
/// for the method of multipliers.
public enum TauSchedule: Equatable, Codable, Sendable {
    /// Vanilla greedy training (VanGL): no transport term at all.
    case off
    /// The same tau for every module.
    case fixed(tau: Double)
    /// tau / 2 for the first half of the modules (k < K / 2), tau for the rest (the paper's default).
    case doubled(tau: Double)
    /// Method of multipliers: weight 1 / lambda, `lambda <- lambda + h * task loss` every `s`
    /// iterations (task loss averaged over those s iterations), lambda starting at lambda0.
    case multipliers(lambda0: Double, h: Double, s: Int)

    /// The transport weight of module `module` of `modules` (multipliers: its starting weight).
    public func initialWeight(module: Int, modules: Int) -> Double {
        switch self {
        case .off: return 0
        case .fixed(let tau): return 1 / (2 * tau)
        case .doubled(let tau): return 1 / (2 * (module < modules / 2 ? tau / 2 : tau))
        case .multipliers(let lambda0, _, _): return 1 / lambda0
        }
    }

    public var isOff: Bool { self == .off }

    /// "off", "fixed 2", "doubled 1", "multipliers": for legends.
    public var shortDescription: String {
        switch self {
        case .off: return "off"
        case .fixed(let tau): return "fixed \(tau.formatted())"
        case .doubled(let tau): return "doubled \(tau.formatted())"
        case .multipliers: return "multipliers"
        }
    }

    public var description: String {
        switch self {
        case .off: return "off (VanGL)"
        case .fixed(let tau): return "fixed tau=\(tau)"
        case .doubled(let tau): return "doubled tau=\(tau) (tau/2 for the first half of the modules)"
        case .multipliers(let l, let h, let s): return "multipliers lambda0=\(l) h=\(h) s=\(s)"
        }
    }
}

/// The transport weight of one module while it trains (tracks lambda for multipliers).
public struct TransportWeight: Codable, Sendable {
    public let schedule: TauSchedule
    public private(set) var weight: Double
    public private(set) var lambda: Double
    private var iterations = 0
    private var accumulatedLoss = 0.0

    public init(schedule: TauSchedule, module: Int, modules: Int) {
        self.schedule = schedule
        weight = schedule.initialWeight(module: module, modules: modules)
        // lambda is 1 / weight; 0 stands for "no transport term" (tau off) so that it stays finite in JSON.
        if case .multipliers(let lambda0, _, _) = schedule { lambda = lambda0 } else { lambda = weight > 0 ? 1 / weight : 0 }
    }

    /// Records one iteration's task loss; for multipliers, updates lambda every s iterations.
    public mutating func record(taskLoss: Double) {
        guard case .multipliers(_, let h, let s) = schedule else { return }
        iterations += 1
        accumulatedLoss += taskLoss
        if iterations % s == 0 {
            lambda += h * accumulatedLoss / Double(s)
            accumulatedLoss = 0
            weight = 1 / lambda
        }
    }
}

import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// How far a run is, for progress lines: the host time it still needs and the emulated device's
/// time so far.
///
/// The remaining host time assumes the rest runs at the FLOP rate the run has had so far: planned
/// FLOPs (``RunPlan``) not yet counted, minus those of modules reused from the store, over the
/// counted FLOPs per second. The device time is the cost model's figure for the work counted so
/// far (kernel work by class, the store's reads, file writes and operations).
public final class RunProgress {
    public struct Estimate: Equatable, Sendable {
        /// nil until some work has been counted.
        public var remainingHostSeconds: Double?
        /// nil without a device profile.
        public var deviceSeconds: Double?
    }

    private var plannedFlops = 0
    private var moduleFlops: [Int: Int] = [:]
    private var skippedFlops = 0
    private var workStart = OperationWork.zero
    private var started: UInt64 = 0
    private var profile: DeviceProfile?
    private weak var cache: FeatureCache?
    private var cacheStart = (read: 0, written: 0, operations: 0, file: Int?.none)

    public init() {}

    /// Starts counting: `moduleFlops` are each module's planned FLOPs over all laps (the whole run
    /// under one key for the resident procedures).
    func begin(moduleFlops: [Int: Int], profile: DeviceProfile?, cache: FeatureCache?) {
        self.moduleFlops = moduleFlops
        plannedFlops = moduleFlops.values.reduce(0, +)
        skippedFlops = 0
        self.profile = profile
        self.cache = cache
        workStart = KernelCounters.work
        started = DispatchTime.now().uptimeNanoseconds
        cacheStart = (cache?.bytesRead ?? 0, cache?.bytesWritten ?? 0, cache?.operations ?? 0, cache?.fileBytesWritten)
    }

    /// Takes note of the events that change what is left (modules reused from the store).
    func observe(_ event: TrainingEvent, laps: Int) {
        if case .moduleResumed(let module, _) = event, let flops = moduleFlops[module] { skippedFlops += flops / max(laps, 1) }
    }

    public var estimate: Estimate {
        let work = KernelCounters.work - workStart
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        var result = Estimate()
        if work.flops > 0, elapsed > 0 {
            let left = max(0, plannedFlops - skippedFlops - work.flops)
            result.remainingHostSeconds = Double(left) / (Double(work.flops) / elapsed)
        }
        if let profile {
            let read = (cache?.bytesRead ?? 0) - cacheStart.read
            let written = cache?.fileBytesWritten.flatMap { now in cacheStart.file.map { now - $0 } } ?? ((cache?.bytesWritten ?? 0) - cacheStart.written)
            let operations = (cache?.operations ?? 0) - cacheStart.operations
            result.deviceSeconds = DeviceCost(profile: profile, work: work, bytesRead: read, bytesWritten: written, operations: operations).seconds
        }
        return result
    }
}

import CBLAS
import Foundation

/// Which OpenBLAS kernels run on this CPU.
///
/// Debian 12's OpenBLAS 0.3.21 does not recognise recent Xeons (Sapphire Rapids) and falls
/// back to its SSE3 "Prescott" kernels: sgemm then runs at ~45 GFLOP/s on this 2-core machine
/// instead of ~300 with the AVX-512 "SkylakeX" kernels (measured with `blockwise bench kernels`).
/// OpenBLAS reads `OPENBLAS_CORETYPE` once, when the library loads, so the choice must be in
/// the environment before the process starts: the CLI re-executes itself once with it set
/// (``BLASConfiguration/reexecIfNeeded()``), and `tools/test` exports it for the tests.
/// A value already in the environment is always respected.
public enum BLASConfiguration {
    /// The OpenBLAS core type suited to this CPU's instruction set, from /proc/cpuinfo.
    public static func preferredCoreType(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> String? {
        guard let cpuinfo, let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    /// The core OpenBLAS selected (e.g. "SkylakeX", "Haswell", "Prescott").
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// If `OPENBLAS_CORETYPE` is unset and this CPU has a better core type than OpenBLAS
    /// detects, sets it and re-executes the current program (once). Returns if nothing to do.
    public static func reexecIfNeeded() {
        #if os(Linux)
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              let preferred = preferredCoreType(), preferred != coreName else { return }
        setenv("OPENBLAS_CORETYPE", preferred, 1)
        let arguments = CommandLine.arguments
        var cArguments = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cArguments)
        // execv only returns on failure: carry on with the detected core.
        #endif
    }
}

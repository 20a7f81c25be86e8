import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The exclusive writer lock of a store: `flock(2)` on the file `<store>-lock` beside it, which
/// holds who took it (PID, host, time, command). One process writes a store at a time; readers
/// (`blockwise cache ls/stats/show/export`) take no lock and keep working during a run.
///
/// The kernel releases the lock when the process ends, however it ends (kill -9 included), so
/// a stale lock file never blocks anyone; the file itself stays (removing it would let two
/// processes lock two different files of the same name).
public final class StoreLock {
    public let storePath: String
    public let lockPath: String
    let descriptor: Int32

    /// The lock file's path for a store: beside the real file, symbolic links resolved, so that
    /// every spelling of one store takes one lock.
    public static func lockPath(for storePath: String) -> String { StoreFile.resolve(storePath) + "-lock" }

    /// Takes the lock or throws ``StoreError/locked`` naming its holder.
    /// - purpose: recorded for the next process that asks ("blockwise train").
    public init(storePath: String, purpose: String) throws {
        self.storePath = storePath
        lockPath = StoreLock.lockPath(for: storePath)
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            if let why = Database.whyCannotOpen(storePath, readOnly: false) {
                throw StoreError.fileSystem(path: storePath, problem: why)
            }
            throw StoreError.fileSystem(path: storePath, problem: "cannot create its lock file '\(lockPath)': \(reason)")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            close(fd)
            if busy { throw StoreError.locked(path: storePath, holder: StoreLock.holder(lockPath: lockPath) ?? "its lock file '\(lockPath)' does not say who") }
            throw StoreError.fileSystem(path: storePath, problem: "cannot lock '\(lockPath)': \(reason)")
        }
        descriptor = fd
        let host = ProcessInfo.processInfo.hostName
        let since = ISO8601DateFormatter().string(from: Date())
        let record = "pid \(getpid()) on host \(host) since \(since) (\(purpose))\n"
        _ = ftruncate(fd, 0)
        _ = record.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit { close(descriptor) }  // releases the flock

    /// Who holds (or last held) the lock, as its file says.
    public static func holder(lockPath: String) -> String? {
        guard let data = FileManager.default.contents(atPath: lockPath), !data.isEmpty else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

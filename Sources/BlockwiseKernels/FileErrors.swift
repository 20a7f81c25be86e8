import Foundation

/// The reason a file operation failed, in words: the POSIX error beneath Foundation's (never a
/// Cocoa error dump).
public func describeFileError(_ error: Error, path: String? = nil) -> String {
    if let path {
        // Foundation reports these as bare Cocoa codes (512): say what is wrong with the path.
        var isDirectory: ObjCBool = false
        let parent = (path as NSString).deletingLastPathComponent
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return "it is a directory; name a file"
        }
        if !parent.isEmpty && !FileManager.default.fileExists(atPath: parent) { return "the directory '\(parent)' does not exist" }
    }
    let nsError = error as NSError
    if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))) }
    switch nsError.code {
    case NSFileWriteOutOfSpaceError: return "no space left on device"
    case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return "permission denied"
    case NSFileWriteVolumeReadOnlyError: return "the file system is read-only"
    case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or directory"
    default: return nsError.localizedDescription
    }
}

/// An output file (an export, a PNG, a report) could not be written.
public struct OutputFileError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public init(path: String, reason: String) { self.path = path; self.reason = reason }
    public init(path: String, error: Error) { self.init(path: path, reason: describeFileError(error, path: path)) }
    public var description: String { "cannot write '\(path)': \(reason). Free space or fix the directory, or pass another path." }
}

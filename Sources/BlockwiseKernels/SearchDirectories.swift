import Foundation

/// Where the binary looks for files of its checkout (`profiles/`, `.venv/`): the current
/// directory, then the executable's directory and up to five above it (a checkout's
/// `.build/release/blockwise` reaches the checkout's root), in that order.
public func checkoutSearchDirectories() -> [URL] {
    var directories = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
    var executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
    for _ in 0..<6 {
        executable = executable.deletingLastPathComponent()
        directories.append(executable)
    }
    return directories
}

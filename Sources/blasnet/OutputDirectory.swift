import BLASNet
import Foundation

/// A command's output directory, made ready before any work starts: a path that cannot
/// be written should cost the user a second, not a finished training run.
enum OutputDirectory {
    /// Creates `path` and its missing parents, checks it is writable, and removes the
    /// temporary files of writers that were killed mid-write.
    static func prepare(_ path: String) throws -> URL {
        try create(path)
        guard access(path, W_OK) == 0 else {
            throw BLASNetError.io("cannot write to output directory \(path): \(String(cString: strerror(errno)))")
        }
        AtomicFile.removeAbandonedTemporaries(in: path)
        return URL(fileURLWithPath: path)
    }

    /// `mkdir -p`, with the system's reason when it fails (FileManager's is a Cocoa error code).
    private static func create(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw BLASNetError.io("cannot create output directory \(path): a file is in the way") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try create(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw BLASNetError.io("cannot create output directory \(path): \(String(cString: strerror(errno)))")
        }
    }
}

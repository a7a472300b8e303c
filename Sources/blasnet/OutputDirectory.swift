import ArgumentParser
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

    /// Refuses to let a new run replace the file at `path` unless `overwrite`: a second
    /// run into the same directory would replace the first one's files after its first epoch.
    static func checkNothingReplaced(_ path: String, overwrite: Bool, otherwise: String) throws {
        var isDirectory: ObjCBool = false
        // Found only when the file is written, after the whole run.
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("\(path) is a directory, where the output file goes; move it or choose another --out")
        }
        guard overwrite || !FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("\(path) exists; \(otherwise), choose another --out, or pass --overwrite to replace it")
        }
    }

    /// Refuses an output file that is one of the command's inputs (through any link or
    /// path spelling): it would be replaced by the results and the input lost.
    static func checkNotAnInput(_ output: String, flag: String, inputs: [(flag: String, path: String)]) throws {
        var out = stat()
        guard stat(output, &out) == 0 else { return }
        for (inputFlag, path) in inputs {
            var info = stat()
            if stat(path, &info) == 0, info.st_dev == out.st_dev, info.st_ino == out.st_ino {
                throw ValidationError("\(flag) \(output) is the \(inputFlag) file: writing the results there would replace it")
            }
        }
    }

    /// Runs `work`, which prepares `path` and writes there; if it throws, removes the
    /// directories that did not exist before and are still empty. A run that fails before
    /// its first file (no dataset at `--data`, a bad checkpoint) then leaves no empty
    /// directory behind, and one that wrote anything keeps it all.
    static func removingIfLeftEmpty<R>(_ path: String, _ work: () throws -> R) throws -> R {
        var missing: [String] = []  // the deepest first
        var directory = path
        while !directory.isEmpty, access(directory, F_OK) != 0 {
            missing.append(directory)
            directory = parent(of: directory)
        }
        do {
            return try work()
        } catch {
            // rmdir removes only empty directories; the first that is not ends the walk up.
            for directory in missing { guard rmdir(directory) == 0 else { break } }
            throw error
        }
    }

    /// The path without its last component ("" for a single component).
    private static func parent(of path: String) -> String {
        // Not NSString's deletingLastPathComponent: this Foundation traps on a one-character path.
        path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    }

    /// `mkdir -p`, with the system's reason when it fails (FileManager's is a Cocoa error code).
    private static func create(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw BLASNetError.io("cannot create output directory \(path): a file is in the way") }
            return
        }
        let parent = parent(of: path)
        if !parent.isEmpty, parent != path { try create(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw BLASNetError.io("cannot create output directory \(path): \(String(cString: strerror(errno)))")
        }
    }
}

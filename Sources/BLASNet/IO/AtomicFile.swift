import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes files so that a reader sees either the old contents or the new ones, never
/// a torn mix, even if the process is killed or the machine loses power mid-write.
public enum AtomicFile {
    /// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over
    /// `path`, and fsyncs the directory so the rename itself is durable.
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw BLASNetError.io("cannot write \(path): \(String(cString: strerror(errno)))") }
        var failure: String?
        data.withUnsafeBytes { raw in
            let half = raw.count / 2
            failure = writeAll(fd, raw.baseAddress, half)
            guard failure == nil else { return }
            FaultInjection.midWrite()
            failure = writeAll(fd, raw.baseAddress.map { $0 + half }, raw.count - half)
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(temporary)
            throw BLASNetError.io("cannot write \(path): \(failure)")
        }
        let dirfd = open(directory, O_RDONLY)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }

    /// Deletes the temporary files that writers killed mid-write left in `directory`
    /// (those whose process is gone); the files they were replacing are intact.
    public static func removeAbandonedTemporaries(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(".") {
            guard let range = name.range(of: ".tmp-", options: .backwards), let pid = Int32(name[range.upperBound...]),
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            unlink(directory + "/" + name)
        }
    }

    /// Writes `count` bytes from `bytes`, through short writes and interruptions; the error text on failure.
    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int) -> String? {
        var offset = 0
        while offset < count, let bytes {
            let n = Glibc.write(fd, bytes + offset, count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return String(cString: strerror(errno))
            }
            offset += n
        }
        return nil
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes files so that a reader sees either the old contents or the new ones, never
/// a torn mix, even if the process is killed or the machine loses power mid-write.
public enum AtomicFile {
    /// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over
    /// `path`, and fsyncs the directory so the rename itself is durable. A file replaced
    /// keeps its permissions; a symbolic link at `path` keeps pointing where it did, and
    /// the file it points to is the one replaced.
    public static func write(_ data: Data, to path: String) throws {
        let target = try followingLinks(path), url = URL(fileURLWithPath: target)
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/" + temporaryName(for: url.lastPathComponent, pid: getpid())
        // A file of that name is one an earlier process of this pid left; O_EXCL and
        // O_NOFOLLOW then make sure the bytes go to a new file, not through a link.
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BLASNetError.io("cannot write \(path): \(String(cString: strerror(errno)))") }
        var failure: String?
        var existing = stat()
        if stat(target, &existing) == 0, fchmod(fd, existing.st_mode & 0o7777) != 0 { failure = String(cString: strerror(errno)) }
        data.withUnsafeBytes { raw in
            guard failure == nil else { return }
            let half = raw.count / 2
            failure = writeAll(fd, raw.baseAddress, half)
            guard failure == nil else { return }
            FaultInjection.midWrite()
            failure = writeAll(fd, raw.baseAddress.map { $0 + half }, raw.count - half)
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil, rename(temporary, target) != 0 { failure = String(cString: strerror(errno)) }
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

    /// The file the chain of symbolic links at `path` ends at (which need not exist yet), or
    /// `path` itself. Renamed over, a link would become a regular file, and the file it
    /// pointed to (a checkpoint kept on other storage, say) would silently stay old.
    static func followingLinks(_ path: String) throws -> String {
        var current = path
        // Linux's own limit on links followed in one lookup.
        for _ in 0..<40 {
            var info = stat()
            guard lstat(current, &info) == 0, info.st_mode & S_IFMT == S_IFLNK else { return current }
            let target: String
            do { target = try FileManager.default.destinationOfSymbolicLink(atPath: current) } catch {
                throw BLASNetError.io("cannot write \(path): cannot read the symbolic link \(current)")
            }
            current = URL(fileURLWithPath: target, relativeTo: URL(fileURLWithPath: current).deletingLastPathComponent()).path
        }
        throw BLASNetError.io("cannot write \(path): \(String(cString: strerror(ELOOP)))")
    }

    /// `.<name>.blasnet-tmp.<host>.<pid>`: named apart from any other program's files, and
    /// by host, since a folder shared over the network holds other machines' writers too.
    static func temporaryName(for name: String, pid: Int32) -> String {
        ".\(name)\(marker)\(hostName).\(pid)"
    }

    private static let marker = ".blasnet-tmp."
    /// gethostname(2): Foundation's `hostName` may wait on a DNS lookup.
    static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// Deletes the temporary files that writers on this machine killed mid-write left in
    /// `directory` (those whose process is gone); the files they were replacing are intact.
    public static func removeAbandonedTemporaries(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(".") {
            guard let markerRange = name.range(of: marker, options: .backwards),
                  let dot = name[markerRange.upperBound...].lastIndex(of: "."),
                  name[markerRange.upperBound..<dot] == hostName, let pid = Int32(name[name.index(after: dot)...]),
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

import Foundation

/// The bytes of the file at `path`, memory-mapped where the system allows, for the
/// readers that parse files from memory; an unreadable file is an `io` error naming it
/// and why (Foundation's own message for a missing file or a directory names neither).
func fileContents(_ path: String) throws -> Data {
    var info = stat()
    guard stat(path, &info) == 0 else {
        // ENOENT, ELOOP (a cycle of links), EACCES on a directory on the way, …
        throw BLASNetError.io("cannot read \(path): \(errno == ENOENT ? "no such file" : String(cString: strerror(errno)))")
    }
    switch info.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: throw BLASNetError.io("cannot read \(path): it is a directory")
    // A device or a pipe has no size to check a header against (/dev/zero never ends).
    default: throw BLASNetError.io("cannot read \(path): not a regular file (a device, pipe or socket)")
    }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    } catch {
        let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
        let reason = underlying.map { $0.domain == NSPOSIXErrorDomain ? String(cString: strerror(Int32($0.code))) : $0.localizedDescription }
        throw BLASNetError.io("cannot read \(path): \(reason ?? (error as NSError).localizedDescription)")
    }
}

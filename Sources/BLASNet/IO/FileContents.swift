import Foundation

/// The bytes of the file at `path`, memory-mapped where the system allows, for the
/// readers that parse files from memory; an unreadable file is an `io` error naming it
/// and why (Foundation's own message for a missing file or a directory names neither).
func fileContents(_ path: String) throws -> Data {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw BLASNetError.io("cannot read \(path): no such file")
    }
    guard !isDirectory.boolValue else { throw BLASNetError.io("cannot read \(path): it is a directory") }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    } catch {
        let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
        let reason = underlying.map { $0.domain == NSPOSIXErrorDomain ? String(cString: strerror(Int32($0.code))) : $0.localizedDescription }
        throw BLASNetError.io("cannot read \(path): \(reason ?? (error as NSError).localizedDescription)")
    }
}

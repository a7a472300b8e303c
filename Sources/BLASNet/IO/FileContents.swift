import Foundation

/// The bytes of the file at `path`, memory-mapped where the system allows, for the
/// readers that parse files from memory; an unreadable file is an `io` error naming it.
func fileContents(_ path: String) throws -> Data {
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    } catch {
        throw BLASNetError.io("cannot read \(path): \((error as NSError).localizedDescription)")
    }
}

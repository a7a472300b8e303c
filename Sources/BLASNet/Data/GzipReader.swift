import CZlib
import Foundation

/// Reads a file through zlib's `gzFile` interface, which looks at the first two bytes:
/// a gzip stream (magic `1f 8b`) is inflated as it is read, anything else is passed
/// through unchanged. A `.gz` name is therefore neither needed nor trusted.
final class GzipReader {
    let path: String
    private let file: gzFile

    /// Largest single `gzread` (its length is a C `unsigned`); also the step by which
    /// ``read(_:_:)`` grows its buffer.
    private static let chunk = 1 << 24

    init(path: String) throws {
        guard let file = gzopen(path, "rb") else {
            throw BLASNetError.io("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        // Reads of at least twice the buffer inflate straight into the caller's memory;
        // a 1 MiB input buffer keeps the read calls on a 26 MB file few.
        gzbuffer(file, 1 << 20)
        self.path = path
        self.file = file
    }

    deinit { gzclose(file) }

    /// True once a read has shown the file to be gzip data.
    var isCompressed: Bool { gzdirect(file) == 0 }

    /// Exactly `count` bytes of (inflated) data; throws `malformedFile` naming `what`
    /// if the data ends sooner or is corrupt. The buffer grows with the bytes actually
    /// read, so a header that claims more than the file holds cannot make us allocate
    /// its claim.
    func read(_ count: Int, _ what: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(count, Self.chunk))
        while bytes.count < count {
            let start = bytes.count, want = min(count - start, Self.chunk)
            bytes.append(contentsOf: repeatElement(0, count: want))
            let got = bytes.withUnsafeMutableBufferPointer { gzread(file, $0.baseAddress! + start, UInt32(want)) }
            if got < want {
                try throwIfDamaged()
                throw BLASNetError.malformedFile(
                    path: path, reason: "\(what): expected \(count) bytes, the \(dataKind) holds only \(start + max(Int(got), 0))\(endOfFile())")
            }
        }
        return bytes
    }

    /// Throws unless the data ends here. For gzip this reads to the end of the stream,
    /// which makes zlib check the trailer's CRC-32 and length.
    func expectEnd(after what: String) throws {
        var byte: UInt8 = 0
        let got = gzread(file, &byte, 1)
        if got > 0 {
            throw BLASNetError.malformedFile(path: path, reason: "the \(dataKind) goes on past the end of \(what)")
        }
        try throwIfDamaged()
        // A gzip stream cut before its trailer reads as a quiet end of data: the failure
        // shows only in zlib's error state.
        let cut = endOfFile()
        if !cut.isEmpty {
            throw BLASNetError.malformedFile(path: path, reason: "the gzip data stops before its trailer, after \(what)\(cut)")
        }
    }

    private var dataKind: String { isCompressed ? "inflated gzip data" : "file" }

    /// Throws if zlib failed for another reason than running out of data: a read error,
    /// corrupt compressed data, a trailer whose CRC-32 or length does not match.
    private func throwIfDamaged() throws {
        var code: Int32 = Z_OK
        guard let message = gzerror(file, &code), code != Z_OK && code != Z_BUF_ERROR else { return }
        if code == Z_ERRNO { throw BLASNetError.io("cannot read \(path): \(zlibText(message))") }
        throw BLASNetError.malformedFile(path: path, reason: "the gzip data is damaged (zlib: \(zlibText(message)))")
    }

    /// zlib's note that the gzip data ended early, as a suffix for our message; empty if
    /// it did not.
    private func endOfFile() -> String {
        var code: Int32 = Z_OK
        guard let message = gzerror(file, &code), code == Z_BUF_ERROR else { return "" }
        return " (zlib: \(zlibText(message)))"
    }

    /// A zlib message without the path zlib puts in front, which our error already names.
    private func zlibText(_ message: UnsafePointer<CChar>) -> String {
        let text = String(cString: message)
        return text.hasPrefix(path + ": ") ? String(text.dropFirst(path.count + 2)) : text
    }
}

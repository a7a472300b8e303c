import CZlib
import Foundation

/// Reads bytes in order from data in memory (a file's contents, mapped) and inflates
/// them as it goes when they are gzip data, recognized as zlib's `gzread` does by the
/// magic `1f 8b`: a `.gz` name is neither needed nor trusted. Several gzip members one
/// after another read as their concatenation, as `gunzip` reads them.
final class GzipReader {
    /// Names the data in errors: the file's path, or what the caller calls in-memory data.
    let path: String
    private let data: Data
    /// Offset in `data` of the next byte to read or inflate.
    private var offset = 0
    /// zlib's inflate state for gzip data (at a fixed address, as zlib requires); nil
    /// for data passed through unchanged.
    private let stream: UnsafeMutablePointer<z_stream>?
    /// Why inflating stopped, once it has.
    private var end: End?

    private enum End {
        /// The last member's trailer was read and checked; nothing follows.
        case complete
        /// The data stops inside a member.
        case cut
        /// Bytes that are not a gzip member follow the last member.
        case trailingBytes(Int)
    }

    private static let gzipMagic: [UInt8] = [0x1F, 0x8B]

    /// Inflated output is gathered in steps that start at this size and double, never
    /// straight at the size a header claims: a few hostile bytes cannot make us allocate
    /// gigabytes.
    private static let firstStep = 1 << 16

    init(data: Data, path: String) throws {
        self.path = path
        self.data = data
        guard data.starts(with: Self.gzipMagic) else {
            stream = nil
            return
        }
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // Window bits 15 + 16: the largest window, and a gzip header and trailer around it.
        guard inflateInit2_(stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            stream.deallocate()
            throw BLASNetError.io("cannot inflate \(path): zlib failed to start")
        }
        self.stream = stream
    }

    convenience init(path: String) throws {
        try self.init(data: fileContents(path), path: path)
    }

    deinit {
        if let stream {
            inflateEnd(stream)
            stream.deallocate()
        }
    }

    /// Exactly `count` bytes of (inflated) data; throws `malformedFile` naming `what`
    /// if the data ends sooner or is corrupt.
    func read(_ count: Int, _ what: String) throws -> [UInt8] {
        guard let stream else {
            let available = data.count - offset
            guard count <= available else { throw short(what, expected: count, got: available) }
            defer { offset += count }
            return [UInt8](data[(data.startIndex + offset)...].prefix(count))
        }
        var bytes: [UInt8] = []
        while bytes.count < count {
            let start = bytes.count, step = min(count - start, max(start, Self.firstStep))
            bytes.append(contentsOf: repeatElement(0, count: step))
            let got = try bytes.withUnsafeMutableBytes { try inflate(into: UnsafeMutableRawBufferPointer(rebasing: $0[start...]), stream) }
            if got < step { throw short(what, expected: count, got: start + got) }
        }
        return bytes
    }

    /// Throws unless the data ends here. For gzip this inflates to the end of the data,
    /// which makes zlib check the trailer's CRC-32 and length.
    func expectEnd(after what: String) throws {
        guard let stream else {
            guard offset == data.count else { throw malformed("the file goes on past the end of \(what)") }
            return
        }
        var byte: UInt8 = 0
        if try withUnsafeMutableBytes(of: &byte, { try inflate(into: $0, stream) }) > 0 {
            throw malformed("the inflated gzip data goes on past the end of \(what)")
        }
        switch end {
        case .cut: throw malformed("the gzip data stops before its trailer, after \(what)")
        case let .trailingBytes(count): throw malformed("\(count) bytes that are not gzip data follow the gzip data, after \(what)")
        case .complete, nil: return
        }
    }

    /// Inflates into `buffer` until it is full or the gzip data ends; returns the number
    /// of bytes written. Throws for corrupt data, including a trailer that does not match.
    private func inflate(into buffer: UnsafeMutableRawBufferPointer, _ stream: UnsafeMutablePointer<z_stream>) throws -> Int {
        var written = 0
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            while written < buffer.count, end == nil {
                // zlib counts in 32 bits: longer spans are fed in several calls.
                let inputSpan = min(input.count - offset, Int(UInt32.max)), outputSpan = min(buffer.count - written, Int(UInt32.max))
                stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self) + offset)
                stream.pointee.avail_in = UInt32(inputSpan)
                stream.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: Bytef.self) + written
                stream.pointee.avail_out = UInt32(outputSpan)
                let code = CZlib.inflate(stream, Z_NO_FLUSH)
                offset += inputSpan - Int(stream.pointee.avail_in)
                written += outputSpan - Int(stream.pointee.avail_out)
                switch code {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    if input[offset...].starts(with: Self.gzipMagic) {
                        inflateReset(stream)
                    } else {
                        end = offset == input.count ? .complete : .trailingBytes(input.count - offset)
                    }
                case Z_BUF_ERROR:
                    // No progress with room left for output: the input ran out inside a member.
                    end = .cut
                default:
                    let message = stream.pointee.msg.map { String(cString: $0) } ?? "error \(code)"
                    throw malformed("the gzip data is damaged (zlib: \(message))")
                }
            }
        }
        return written
    }

    private func short(_ what: String, expected: Int, got: Int) -> BLASNetError {
        let kind = stream == nil ? "file" : "inflated gzip data"
        let cut = if case .cut = end { ", where the gzip data stops early" } else { "" }
        return malformed("\(what): expected \(expected) bytes, the \(kind) holds only \(got)\(cut)")
    }

    private func malformed(_ reason: String) -> BLASNetError { .malformedFile(path: path, reason: reason) }
}

import Foundation

/// IDX files, the format of MNIST and Fashion-MNIST: a magic number `00 00 type rank`,
/// `rank` big-endian UInt32 dimensions, then the elements in row-major order.
///
/// Files may be gzip-compressed, as they are distributed; compression is recognized
/// from the bytes, not the name. Every size is checked against the bytes really
/// there, so a damaged file is an error that names it, never a short or wrong read.
public enum IDX {
    /// Element type code of unsigned bytes, the only type image datasets use.
    static let unsignedByte: UInt8 = 0x08

    /// Names of IDX element types, for saying what a wrong file holds instead.
    static let typeNames: [UInt8: String] = [
        0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
    ]

    /// The images of an `idx3-ubyte` file (magic `0x00000803`): `count` images of
    /// `height × width` bytes each, row-major, one after another.
    public static func readImages(path: String) throws -> (pixels: [UInt8], count: Int, height: Int, width: Int) {
        try readImages(GzipReader(path: path))
    }

    /// The images of an `idx3-ubyte` file held in memory, raw or gzip-compressed, as
    /// ``readImages(path:)`` reads them; `path` only names the data in errors.
    public static func readImages(data: Data, path: String = "IDX data") throws -> (pixels: [UInt8], count: Int, height: Int, width: Int) {
        try readImages(GzipReader(data: data, path: path))
    }

    private static func readImages(_ file: GzipReader) throws -> (pixels: [UInt8], count: Int, height: Int, width: Int) {
        let dims = try readHeader(file, rank: 3, holding: "images: N × height × width")
        guard dims[1] > 0, dims[2] > 0 else {
            throw BLASNetError.malformedFile(path: file.path, reason: "images of \(dims[1])×\(dims[2]) pixels have no pixels")
        }
        let size = try byteCount(dims, path: file.path)
        let pixels = try file.read(size, "\(dims[0]) images of \(dims[1])×\(dims[2]) pixels")
        try file.expectEnd(after: "the \(dims[0]) images its header announces")
        return (pixels, dims[0], dims[1], dims[2])
    }

    /// The labels of an `idx1-ubyte` file (magic `0x00000801`), each checked to be
    /// below `classes`.
    public static func readLabels(path: String, classes: Int) throws -> [Int] {
        try readLabels(GzipReader(path: path), classes: classes)
    }

    /// The labels of an `idx1-ubyte` file held in memory, raw or gzip-compressed, as
    /// ``readLabels(path:classes:)`` reads them; `path` only names the data in errors.
    public static func readLabels(data: Data, path: String = "IDX data", classes: Int) throws -> [Int] {
        try readLabels(GzipReader(data: data, path: path), classes: classes)
    }

    private static func readLabels(_ file: GzipReader, classes: Int) throws -> [Int] {
        let count = try readHeader(file, rank: 1, holding: "labels: N")[0]
        let bytes = try file.read(count, "\(count) labels")
        try file.expectEnd(after: "the \(count) labels its header announces")
        if let i = bytes.firstIndex(where: { Int($0) >= classes }) {
            throw BLASNetError.malformedFile(path: file.path, reason: "label \(bytes[i]) at index \(i) is not below the \(classes) classes")
        }
        return bytes.map(Int.init)
    }

    /// Checks the magic number of an unsigned-byte file of `rank` dimensions and reads
    /// the dimensions.
    private static func readHeader(_ file: GzipReader, rank: Int, holding contents: String) throws -> [Int] {
        func fail(_ reason: String) -> BLASNetError { .malformedFile(path: file.path, reason: reason) }
        let expected = String(format: "0x%08X", Int(unsignedByte) << 8 | rank)
        let magic = try file.read(4, "the IDX magic number")
        guard magic[0] == 0, magic[1] == 0 else {
            let got = magic.map { String(format: "%02X", $0) }.joined()
            throw fail("not an IDX file: magic number 0x\(got), expected \(expected) (\(contents))")
        }
        guard magic[2] == unsignedByte else {
            let name = typeNames[magic[2]].map { " (\($0))" } ?? ""
            throw fail("element type 0x\(String(format: "%02X", magic[2]))\(name), expected 0x08 (unsigned byte)")
        }
        guard Int(magic[3]) == rank else {
            let got = String(format: "0x%08X", Int(magic[2]) << 8 | Int(magic[3]))
            throw fail("magic number \(got) is for \(magic[3])-dimensional data, expected \(expected) (\(contents))")
        }
        let header = try file.read(4 * rank, "the header's \(rank) dimensions")
        return (0..<rank).map { d in header[(4 * d)..<(4 * d + 4)].reduce(0) { $0 << 8 | Int($1) } }
    }

    /// Bytes of a file of unsigned bytes with dimensions `dims`.
    private static func byteCount(_ dims: [Int], path: String) throws -> Int {
        guard let count = Tensor.elementCount(dims) else {
            throw BLASNetError.malformedFile(
                path: path, reason: "dimensions \(dims.map(String.init).joined(separator: "×")) overflow a 64-bit size")
        }
        return count
    }
}

import Foundation

/// Element types of the safetensors format.
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    /// PyTorch's `float8_e4m3fn` (no infinities; 448 at most) and `float8_e5m2`.
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .f8e4m3, .f8e5m2, .i8, .u8, .bool: 1
        }
    }
}

/// One tensor of a safetensors file: its dtype, shape and little-endian bytes.
public struct SafeTensor: Sendable, Equatable {
    public let dtype: DType
    public let shape: [Int]
    public let bytes: Data

    /// A tensor from raw little-endian bytes; throws if the byte count does not fit.
    public init(dtype: DType, shape: [Int], bytes: Data) throws {
        guard let count = Tensor.elementCount(shape), count.multipliedReportingOverflow(by: dtype.size) == (bytes.count, false) else {
            throw BLASNetError.invalidArgument("\(dtype.rawValue) tensor of shape \(shape) cannot hold \(bytes.count) bytes")
        }
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// An F32 tensor holding `tensor`.
    public init(_ tensor: Tensor) {
        dtype = .f32
        shape = tensor.shape
        bytes = tensor.withUnsafePointer { Data(bytes: $0, count: tensor.count * MemoryLayout<Float>.size) }
    }

    /// An I64 tensor holding `values`; throws unless they are as many as `shape` holds.
    public init(int64s values: [Int64], shape: [Int]) throws {
        guard Tensor.elementCount(shape) == values.count else {
            throw BLASNetError.invalidArgument("SafeTensor: \(values.count) values for shape \(shape)")
        }
        self.init(uncheckedInt64s: values, shape: shape)
    }

    /// An I64 tensor of a buffer's own values and shape.
    init(uncheckedInt64s values: [Int64], shape: [Int]) {
        dtype = .i64
        self.shape = shape
        bytes = values.withUnsafeBytes { Data($0) }
    }

    /// The elements converted to Float32 (how BLASNet holds every parameter).
    public func floats() -> Tensor {
        let count = bytes.count / dtype.size
        var out = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            func convert<T>(_: T.Type, _ f: (T) -> Float) {
                for i in 0..<count { out[i] = f(raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
            }
            switch dtype {
            case .f32: convert(Float.self) { $0 }
            case .f64: convert(Double.self) { Float($0) }
            case .f16: convert(UInt16.self) { Float(Float16(bitPattern: $0)) }
            case .bf16: convert(UInt16.self) { Float(bitPattern: UInt32($0) << 16) }
            // E5M2 is the upper byte of an IEEE half.
            case .f8e5m2: convert(UInt8.self) { Float(Float16(bitPattern: UInt16($0) << 8)) }
            case .f8e4m3: convert(UInt8.self, Self.floatE4M3)
            case .i64: convert(Int64.self) { Float($0) }
            case .i32: convert(Int32.self) { Float($0) }
            case .i16: convert(Int16.self) { Float($0) }
            case .i8: convert(Int8.self) { Float($0) }
            case .u64: convert(UInt64.self) { Float($0) }
            case .u32: convert(UInt32.self) { Float($0) }
            case .u16: convert(UInt16.self) { Float($0) }
            case .u8, .bool: convert(UInt8.self) { Float($0) }
            }
        }
        // The shape was validated against the byte count when this value was made.
        return try! Tensor(shape: shape, scalars: out)
    }

    /// 1 sign, 4 exponent (bias 7) and 3 mantissa bits; all ones in exponent and mantissa is NaN.
    private static func floatE4M3(_ bits: UInt8) -> Float {
        let exponent = Int(bits >> 3 & 0xF), mantissa = Float(bits & 7)
        let sign: FloatingPointSign = bits & 0x80 == 0 ? .plus : .minus
        if exponent == 0xF && mantissa == 7 { return .nan }
        return exponent == 0 ? Float(sign: sign, exponent: -9, significand: mantissa)
                             : Float(sign: sign, exponent: exponent - 7, significand: 1 + mantissa / 8)
    }

    /// The elements as integers; throws for floating-point dtypes and for a U64 past Int64.
    public func integers() throws -> [Int64] {
        let count = bytes.count / dtype.size
        return try bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            func convert<T: BinaryInteger>(_: T.Type) throws -> [Int64] {
                try (0..<count).map {
                    let value = raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)
                    guard let exact = Int64(exactly: value) else {
                        throw BLASNetError.invalidArgument("\(dtype.rawValue) value \(value) is past Int64")
                    }
                    return exact
                }
            }
            switch dtype {
            case .i64: return try convert(Int64.self)
            case .i32: return try convert(Int32.self)
            case .i16: return try convert(Int16.self)
            case .i8: return try convert(Int8.self)
            case .u64: return try convert(UInt64.self)
            case .u32: return try convert(UInt32.self)
            case .u16: return try convert(UInt16.self)
            case .u8, .bool: return try convert(UInt8.self)
            case .f64, .f32, .f16, .bf16, .f8e4m3, .f8e5m2:
                throw BLASNetError.invalidArgument("expected an integer tensor, got \(dtype.rawValue)")
            }
        }
    }
}

/// A safetensors file (huggingface/safetensors): named tensors and string metadata.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`),
/// then the data buffer. Reading checks every offset against the file, so a corrupt
/// file is an error, never an out-of-bounds read.
public struct SafeTensorsFile: Sendable {
    /// Tensors in file order.
    public var tensors: [(name: String, tensor: SafeTensor)]
    public var metadata: [String: String]

    /// Largest header the reference implementation accepts.
    static let maxHeaderSize = 100_000_000

    /// A file to write holding `tensors` in this order, with `metadata` as its `__metadata__`.
    public init(tensors: [(name: String, tensor: SafeTensor)] = [], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The tensor named `name`, if present.
    public subscript(name: String) -> SafeTensor? {
        tensors.first { $0.name == name }?.tensor
    }

    /// Reads and validates the file at `path`.
    public init(contentsOf path: String) throws {
        try self.init(data: fileContents(path), path: path)
    }

    /// Parses and validates serialized bytes; `path` only names the source in errors.
    public init(data: Data, path: String = "safetensors data") throws {
        func fail(_ reason: String) -> BLASNetError { .malformedFile(path: path, reason: reason) }
        guard data.count >= 8 else { throw fail("file is \(data.count) bytes, shorter than the 8-byte header length") }
        let base = data.startIndex
        let headerLength = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(Self.maxHeaderSize) else { throw fail("header length \(headerLength) exceeds 100 MB: not a safetensors file?") }
        let n = Int(headerLength)
        guard 8 + n <= data.count else { throw fail("header length \(n) runs past the end of the \(data.count)-byte file") }
        let headerBytes = data[(base + 8)..<(base + 8 + n)]
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        guard String(data: headerBytes, encoding: .utf8) != nil,
              let json = try? JSONSerialization.jsonObject(with: headerBytes),
              let header = json as? [String: Any] else { throw fail("header is not a UTF-8 JSON object") }

        var metadata: [String: String] = [:]
        var entries: [(name: String, dtype: DType, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw fail("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else { throw fail("entry '\(name)' is not an object") }
            guard let dtypeName = info["dtype"] as? String, let dtype = DType(rawValue: dtypeName) else {
                throw fail("tensor '\(name)' has an unknown dtype \(info["dtype"].map { "\($0)" } ?? "(none)")")
            }
            guard let shape = (info["shape"] as? [Any])?.compactMap(Self.integer), shape.count == (info["shape"] as? [Any])?.count,
                  let count = Tensor.elementCount(shape) else {
                throw fail("tensor '\(name)' has an invalid shape")
            }
            guard let offsets = (info["data_offsets"] as? [Any])?.compactMap(Self.integer), offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw fail("tensor '\(name)' has invalid data_offsets")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, offsets[1] - offsets[0] == bytes else {
                throw fail("tensor '\(name)': \(dtype.rawValue) \(shape) needs \(count) × \(dtype.size) bytes, offsets span \(offsets[1] - offsets[0])")
            }
            entries.append((name, dtype, shape, offsets[0], offsets[1]))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        let bufferStart = 8 + n
        var expected = 0
        for e in entries {
            guard e.begin == expected else {
                throw fail("tensor '\(e.name)' starts at byte \(e.begin) of the data, expected \(expected): offsets are not contiguous")
            }
            expected = e.end
        }
        // Compared as a difference: offsets near Int.max would overflow a sum.
        guard expected == data.count - bufferStart else {
            throw fail("data buffer is \(data.count - bufferStart) bytes, the header describes \(expected)")
        }
        tensors = try entries.map { e in
            let slice = data[(base + bufferStart + e.begin)..<(base + bufferStart + e.end)]
            return (e.name, try SafeTensor(dtype: e.dtype, shape: e.shape, bytes: Data(slice)))
        }
        self.metadata = metadata
    }

    /// JSON numbers arrive as NSNumber; accept only non-negative integers (not
    /// booleans or floats, which NSNumber would silently convert).
    private static func integer(_ value: Any) -> Int? {
        guard let number = value as? NSNumber, "ilqsILQS".contains(String(cString: number.objCType)),
              let i = value as? Int, i >= 0 else { return nil }
        return i
    }

    /// The file's bytes: header padded with spaces so the data starts 8-byte aligned.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for (name, t) in tensors {
            guard name != "__metadata__", header[name] == nil else {
                throw BLASNetError.invalidArgument("safetensors: duplicate or reserved tensor name '\(name)'")
            }
            header[name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + t.bytes.count]] as [String: Any]
            offset += t.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        json.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for (_, t) in tensors { out.append(t.bytes) }
        return out
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    public func write(to path: String) throws {
        try AtomicFile.write(serialized(), to: path)
    }
}

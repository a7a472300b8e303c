/// A dense Float32 tensor: a shape and its elements in row-major order.
///
/// Models take and return tensors in PyTorch's layouts (`[N, C, H, W]` images,
/// `[N, K]` logits). Inside a model, layers pass activations *channel-major*,
/// `[C, N, H, W]` (and `[F, N]` for feature vectors): every 1×1 convolution is then
/// one sgemm over the whole batch and every per-channel reduction reads one
/// contiguous block. ``swappingFirstAxes()`` converts between the two.
///
/// Tensors are values: copies share memory until one of them is written.
public struct Tensor: @unchecked Sendable {
    /// Extent of each axis; `[]` is a scalar.
    public private(set) var shape: [Int]
    private var storage: TensorStorage

    /// Wraps `scalars` with `shape`; throws if the counts disagree or a dimension is negative.
    public init(shape: [Int], scalars: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw BLASNetError.invalidArgument("tensor shape \(shape) has a negative dimension")
        }
        let needed = Self.elementCount(shape)
        guard needed == scalars.count else {
            throw BLASNetError.invalidArgument(
                "tensor shape \(shape) needs \(needed.map(String.init) ?? "more than \(Int.max)") elements, got \(scalars.count)")
        }
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: scalars.count) }
    }

    /// A tensor of `shape` filled with `value` (zeros by default).
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(uninitializedShape: shape)
        storage.pointer.update(repeating: value, count: storage.count)
    }

    /// A scalar (shape `[]`).
    public init(scalar: Float) {
        self.init(shape: [], repeating: scalar)
    }

    /// A tensor whose elements the caller must write before reading (kernel outputs).
    init(uninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        storage = BufferPool.shared.storage(count: shape.reduce(1, *), shape: shape)
        self.shape = storage.shape
    }

    /// Number of elements.
    public var count: Int { storage.count }

    /// The product of `shape`, or nil when a dimension is negative or the product overflows `Int`.
    static func elementCount(_ shape: [Int]) -> Int? {
        var product = 1
        for n in shape {
            guard n >= 0 else { return nil }
            let (next, overflow) = product.multipliedReportingOverflow(by: n)
            if overflow { return nil }
            product = next
        }
        return product
    }

    /// The elements as an array (a copy); setting replaces them all.
    public var scalars: [Float] {
        get { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }
        set {
            precondition(newValue.count == count, "\(newValue.count) scalars for shape \(shape)")
            withUnsafeMutablePointer { p in newValue.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: $0.count) } }
        }
    }

    /// Element at flat (row-major) index `i`.
    public subscript(i: Int) -> Float {
        get {
            precondition(i >= 0 && i < count, "index \(i) out of range for shape \(shape)")
            return storage.pointer[i]
        }
        set {
            precondition(i >= 0 && i < count, "index \(i) out of range for shape \(shape)")
            withUnsafeMutablePointer { $0[i] = newValue }
        }
    }

    /// The same elements under a new shape with the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard Self.elementCount(newShape) == count else {
            throw BLASNetError.invalidArgument("cannot reshape \(shape) (\(count) elements) to \(newShape)")
        }
        var t = self
        t.shape = newShape
        return t
    }

    /// Swaps the first two axes: `[N, C, …] <-> [C, N, …]`, `[N, K] <-> [K, N]`.
    ///
    /// Converts between PyTorch's batch-major layout and BLASNet's channel-major one.
    public func swappingFirstAxes() -> Tensor {
        precondition(shape.count >= 2, "swappingFirstAxes needs at least two axes, got \(shape)")
        let a = shape[0], b = shape[1], inner = shape.dropFirst(2).reduce(1, *)
        // Literals for images and logits, which can live on the stack: a concatenation
        // allocates its array on every call.
        var out = switch shape.count {
        case 2: Tensor(uninitializedShape: [b, a])
        case 4: Tensor(uninitializedShape: [b, a, shape[2], shape[3]])
        default: Tensor(uninitializedShape: [b, a] + shape.dropFirst(2))
        }
        out.withUnsafeMutablePointer { Kernels.swapOuterAxes(storage.pointer, $0, a: a, b: b, inner: inner) }
        return out
    }

    /// Whether no element is infinite or NaN.
    public var isFinite: Bool {
        withUnsafePointer { Kernels.allFinite($0, count: count) }
    }

    /// Element-wise `lhs += rhs`; the shapes must be equal.
    public static func += (lhs: inout Tensor, rhs: Tensor) {
        precondition(lhs.shape == rhs.shape, "adding \(rhs.shape) to \(lhs.shape)")
        let count = lhs.count
        rhs.withUnsafePointer { r in lhs.withUnsafeMutablePointer { Kernels.accumulate(r, into: $0, count: count) } }
    }

    /// Whether no other tensor shares this one's memory, so that a write needs no copy
    /// (the pool's own reference does not count).
    mutating func isUniquelyReferenced() -> Bool { BufferPool.shared.isUniquelyReferenced(&storage) }

    /// Raw read-only access to the elements for kernels.
    public func withUnsafePointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(storage.pointer) }
    }

    /// Raw mutable access to the elements for kernels; copies first if the memory is shared.
    public mutating func withUnsafeMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        if !isUniquelyReferenced() {
            let copy = BufferPool.shared.storage(count: storage.count, shape: shape)
            copy.pointer.update(from: storage.pointer, count: storage.count)
            storage = copy
        }
        return try withExtendedLifetime(storage) { try body(storage.pointer) }
    }
}

extension Tensor: Equatable {
    public static func == (a: Tensor, b: Tensor) -> Bool {
        a.shape == b.shape && (a.storage === b.storage || (0..<a.count).allSatisfy { a.storage.pointer[$0] == b.storage.pointer[$0] })
    }
}

/// Runs `body` with the elements of `tensor`, or with nil when there is no tensor.
func withOptionalPointer<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    guard let tensor else { return try body(nil) }
    return try tensor.withUnsafePointer { try body($0) }
}

/// Runs `body` with the mutable elements of `tensor`, or with nil when there is no tensor.
func withOptionalMutablePointer<R>(_ tensor: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) throws -> R) rethrows -> R {
    guard tensor != nil else { return try body(nil) }
    return try tensor!.withUnsafeMutablePointer { try body($0) }
}

/// A dense Float32 tensor: a shape and its elements in row-major order.
///
/// Models take and return tensors in PyTorch's layouts (`[N, C, H, W]` images,
/// `[N, K]` logits). Inside a model, layers pass activations *channel-major*,
/// `[C, N, H, W]` (and `[F, N]` for feature vectors): every 1×1 convolution is then
/// one sgemm over the whole batch and every per-channel reduction reads one
/// contiguous block. ``swappingFirstAxes()`` converts between the two.
public struct Tensor: Sendable, Equatable {
    /// Extent of each axis; `[]` is a scalar.
    public private(set) var shape: [Int]
    /// The elements, row-major; `scalars.count == shape.reduce(1, *)`.
    public var scalars: [Float]

    /// Wraps `scalars` with `shape`; throws if the counts disagree or a dimension is negative.
    public init(shape: [Int], scalars: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw BLASNetError.invalidArgument("tensor shape \(shape) has a negative dimension")
        }
        guard shape.reduce(1, *) == scalars.count else {
            throw BLASNetError.invalidArgument(
                "tensor shape \(shape) needs \(shape.reduce(1, *)) elements, got \(scalars.count)")
        }
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of `shape` filled with `value` (zeros by default).
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.scalars = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// A scalar (shape `[]`).
    public init(scalar: Float) {
        self.shape = []
        self.scalars = [scalar]
    }

    /// Number of elements.
    public var count: Int { scalars.count }

    /// The same elements under a new shape with the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        try Tensor(shape: newShape, scalars: scalars)
    }

    /// Swaps the first two axes: `[N, C, …] <-> [C, N, …]`, `[N, K] <-> [K, N]`.
    ///
    /// Converts between PyTorch's batch-major layout and BLASNet's channel-major one.
    public func swappingFirstAxes() -> Tensor {
        precondition(shape.count >= 2, "swappingFirstAxes needs at least two axes, got \(shape)")
        let a = shape[0], b = shape[1], inner = shape.dropFirst(2).reduce(1, *)
        var out = Tensor(shape: [b, a] + shape.dropFirst(2))
        scalars.withUnsafeBufferPointer { src in
            out.scalars.withUnsafeMutableBufferPointer { dst in
                Kernels.swapOuterAxes(src.baseAddress!, dst.baseAddress!, a: a, b: b, inner: inner)
            }
        }
        return out
    }

    /// Element-wise `lhs += rhs`; the shapes must be equal.
    public static func += (lhs: inout Tensor, rhs: Tensor) {
        precondition(lhs.shape == rhs.shape, "adding \(rhs.shape) to \(lhs.shape)")
        let count = lhs.count
        rhs.withUnsafePointer { r in lhs.withUnsafeMutablePointer { Kernels.accumulate(r, into: $0, count: count) } }
    }

    /// Raw read-only access to the elements for kernels.
    @inlinable
    public func withUnsafePointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// Raw mutable access to the elements for kernels.
    @inlinable
    public mutating func withUnsafeMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
    }
}

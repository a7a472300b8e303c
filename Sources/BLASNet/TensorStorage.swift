import Foundation

/// The memory behind a ``Tensor``: a reference-counted buffer whose memory goes back
/// to ``BufferPool`` when the last tensor using it goes away.
final class TensorStorage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    /// The shape of the tensor this memory was taken for; it goes back to the pool with
    /// the memory, so that the next tensor of that shape adopts the array instead of a new one.
    let shape: [Int]

    /// Uninitialized memory for `count` floats, for a tensor of `shape`.
    init(count: Int, shape: [Int]) {
        self.count = count
        (pointer, self.shape) = BufferPool.shared.take(count, shape: shape)
    }

    deinit { BufferPool.shared.give(pointer, count: count, shape: shape) }
}

import Foundation

/// The memory behind a ``Tensor``: a buffer with a reference count. ``BufferPool`` keeps
/// the storages it hands out and hands each out again, whole, once no tensor uses it.
final class TensorStorage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    /// The shape of the tensor this storage was last taken for, so that the next tensor
    /// of that shape adopts the array instead of a new one. Only the pool writes it, with
    /// its lock held, while no tensor uses the storage.
    var shape: [Int]
    /// Where the pool keeps this storage, or nil when it is not pooled.
    let entry: (sizeClass: BufferPool.SizeClass, index: Int)?

    /// Uninitialized memory for `count` floats, for a tensor of `shape`.
    init(count: Int, shape: [Int], entry: (sizeClass: BufferPool.SizeClass, index: Int)?) {
        (pointer, self.count, self.shape, self.entry) = (.allocateLineAligned(max(count, 1)), count, shape, entry)
    }

    deinit { pointer.deallocateLineAligned() }
}

extension UnsafeMutablePointer<Float> {
    /// `count` floats starting on a cache line. malloc aligns to 16 bytes (a large block
    /// sits 16 bytes past a page boundary), so OpenBLAS's 64-byte AVX-512 loads and stores
    /// of the operands it reads and writes in place would straddle two lines.
    static func allocateLineAligned(_ count: Int) -> Self {
        UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
    }

    /// Frees memory from ``allocateLineAligned(_:)``.
    func deallocateLineAligned() { UnsafeMutableRawPointer(self).deallocate() }
}

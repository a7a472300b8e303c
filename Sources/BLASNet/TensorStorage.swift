import Synchronization

/// The memory behind a ``Tensor``: a reference-counted buffer whose memory goes back
/// to ``BufferPool`` when the last tensor using it goes away.
final class TensorStorage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    /// Uninitialized memory for `count` floats.
    init(count: Int) {
        self.count = count
        pointer = BufferPool.shared.take(count)
    }

    deinit { BufferPool.shared.give(pointer, count: count) }
}

/// Recycles tensor memory by exact size. A training step allocates the same shapes
/// every time, so after the first step every activation, gradient and column buffer
/// comes from here: no page faults, no zeroing by the kernel, no malloc.
public final class BufferPool: Sendable {
    static let shared = BufferPool()

    /// Buffers at or below this size go straight to malloc: the pool is for the big ones.
    private static let minimumPooled = 1024
    /// A free buffer; only the pool touches it until it is handed out again.
    private struct FreeBuffer: @unchecked Sendable { let pointer: UnsafeMutablePointer<Float> }
    private let free = Mutex<[Int: [FreeBuffer]]>([:])

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count >= Self.minimumPooled, let reused = free.withLock({ $0[count]?.popLast() }) { return reused.pointer }
        return .allocate(capacity: max(count, 1))
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        guard count >= Self.minimumPooled else { return pointer.deallocate() }
        let buffer = FreeBuffer(pointer: pointer)
        free.withLock { $0[count, default: []].append(buffer) }
    }

    /// Returns every cached buffer to the system (for example after training, before
    /// a long-lived process does something else).
    public static func releaseCachedMemory() {
        let buffers = shared.free.withLock { pool in
            defer { pool.removeAll() }
            return pool.values.flatMap { $0 }
        }
        for b in buffers { b.pointer.deallocate() }
    }
}

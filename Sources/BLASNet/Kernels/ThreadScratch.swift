import Foundation

/// Scratch memory each thread keeps for itself between kernel calls. A worker's private
/// buffer of more than a few KiB from `withUnsafeTemporaryAllocation` comes from the heap
/// on every call; this one is allocated once per thread (and again only to grow).
enum ThreadScratch {
    /// The calling thread's buffer: its capacity in floats, then the floats.
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let created = pthread_key_create(&key) { $0.map { free($0) } }
        precondition(created == 0, "pthread_key_create failed: \(created)")
        return key
    }()

    /// Room for the capacity (an `Int`) that keeps the floats after it 16-byte aligned, as malloc's block is.
    private static let header = 16

    /// Runs `body` with this thread's scratch of at least `count` floats, whose contents
    /// are whatever an earlier call left. Not reentrant: `body` must not call it again,
    /// since a larger request frees the buffer it is using.
    static func withFloats<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        var block = pthread_getspecific(key)
        if block == nil || block!.load(as: Int.self) < count {
            free(block)
            block = malloc(header + max(count, 1) * MemoryLayout<Float>.stride)
            guard let block else { fatalError("out of memory for \(count) floats of scratch") }
            block.storeBytes(of: count, as: Int.self)
            pthread_setspecific(key, block)
        }
        return try body((block! + header).bindMemory(to: Float.self, capacity: block!.load(as: Int.self)))
    }
}

import Foundation

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
///
/// `@unchecked Sendable`: `free` is read and written only with `lock` held. The lock is
/// an `NSLock`, not Synchronization's `Mutex`: a contended `Mutex` on Linux waits in a
/// priority-inheritance futex inside the uninstrumented runtime, so ThreadSanitizer
/// sees no ordering between two holders and reports the pool's own accesses as races;
/// `NSLock` is a pthread mutex, which it follows.
public final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()

    /// Buffers at or below this size go straight to malloc: the pool is for the big ones.
    private static let minimumPooled = 1024
    private let lock = NSLock()
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        guard count >= Self.minimumPooled, let reused = lock.withLock({ free[count]?.popLast() }) else {
            return .allocate(capacity: max(count, 1))
        }
        AddressSanitizer.unpoison(reused, count: count)
        return reused
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        guard count >= Self.minimumPooled else { return pointer.deallocate() }
        AddressSanitizer.poison(pointer, count: count)
        lock.withLock { free[count, default: []].append(pointer) }
    }

    /// Returns every cached buffer to the system (for example after training, before
    /// a long-lived process does something else).
    public static func releaseCachedMemory() {
        let buffers = shared.lock.withLock {
            defer { shared.free.removeAll() }
            return shared.free.flatMap { count, pointers in pointers.map { ($0, count) } }
        }
        for (pointer, count) in buffers {
            AddressSanitizer.unpoison(pointer, count: count)
            pointer.deallocate()
        }
    }
}

/// Marks pooled memory for AddressSanitizer when the process runs under it. A buffer
/// back in the pool is never freed, so without this ASan would take a tensor read after
/// its storage went away for an ordinary access; poisoned, it reports it as a
/// use-after-poison. Outside ASan the entry points are absent and these do nothing.
enum AddressSanitizer {
    private typealias Region = @convention(c) (UnsafeRawPointer, Int) -> Void
    private static let entryPoints: (poison: Region, unpoison: Region)? = {
        let process = dlopen(nil, RTLD_LAZY)
        guard let poison = dlsym(process, "__asan_poison_memory_region"),
              let unpoison = dlsym(process, "__asan_unpoison_memory_region") else { return nil }
        return (unsafeBitCast(poison, to: Region.self), unsafeBitCast(unpoison, to: Region.self))
    }()

    static func poison(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        entryPoints?.poison(pointer, count * MemoryLayout<Float>.stride)
    }

    static func unpoison(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        entryPoints?.unpoison(pointer, count * MemoryLayout<Float>.stride)
    }
}

import Foundation

/// Recycles tensor memory by exact size. A training step allocates the same shapes
/// every time, so after the first step every activation, gradient and column buffer
/// comes from here, with its shape array: no page faults, no zeroing by the kernel, no malloc.
///
/// `@unchecked Sendable`: `free` is read and written only with `lock` held. The lock is
/// an `NSLock`, not Synchronization's `Mutex`: a contended `Mutex` on Linux waits in a
/// priority-inheritance futex inside the uninstrumented runtime, so ThreadSanitizer
/// sees no ordering between two holders and reports the pool's own accesses as races;
/// `NSLock` is a pthread mutex, which it follows.
public final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()

    /// Buffers kept per size; beyond this many released at once (far more than a step
    /// makes) they go back to the system.
    private static let maximumPerSize = 256
    private typealias Entry = (pointer: UnsafeMutablePointer<Float>, shape: [Int])
    /// A class, so that popping and pushing through the dictionary never copies the list.
    private final class FreeList {
        var entries: [Entry] = []

        /// The most recently released entry, preferring one last used with `shape`
        /// (shapes of equal size, such as `[64, N, 16, 16]` and `[256, N, 8, 8]`, share a list).
        func take(_ shape: [Int]) -> Entry? {
            guard let last = entries.indices.last else { return nil }
            let match = entries.lastIndex { $0.shape == shape } ?? last
            entries.swapAt(match, last)
            return entries.removeLast()
        }
    }
    private let lock = NSLock()
    private var free: [Int: FreeList] = [:]

    /// Memory for `count` floats and the shape array to use for `shape`.
    func take(_ count: Int, shape: [Int]) -> (UnsafeMutablePointer<Float>, [Int]) {
        guard let (pointer, cachedShape) = lock.withLock({ free[count]?.take(shape) }) else {
            return (.allocate(capacity: max(count, 1)), Self.copy(shape))
        }
        AddressSanitizer.unpoison(pointer, count: count)
        return (pointer, cachedShape == shape ? cachedShape : Self.copy(shape))
    }

    /// A copy of `shape` in new storage, so that the caller's array never escapes and can
    /// live on its stack.
    private static func copy(_ shape: [Int]) -> [Int] {
        // A scalar's `[]` is the shared empty array, whose header the initializer below would write.
        guard !shape.isEmpty else { return [] }
        return Array(unsafeUninitializedCapacity: shape.count) { buffer, initialized in
            initialized = buffer.initialize(fromContentsOf: shape)
        }
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int, shape: [Int]) {
        AddressSanitizer.poison(pointer, count: count)
        let kept = lock.withLock {
            let list: FreeList
            if let known = free[count] {
                list = known
            } else {
                list = FreeList()
                free[count] = list
            }
            guard list.entries.count < Self.maximumPerSize else { return false }
            list.entries.append((pointer, shape))
            return true
        }
        if !kept {
            AddressSanitizer.unpoison(pointer, count: count)
            pointer.deallocate()
        }
    }

    /// Returns every cached buffer to the system (for example after training, before
    /// a long-lived process does something else).
    public static func releaseCachedMemory() {
        let buffers = shared.lock.withLock {
            defer { shared.free.removeAll() }
            return shared.free.flatMap { count, list in list.entries.map { ($0.pointer, count) } }
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

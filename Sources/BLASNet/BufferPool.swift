import Foundation

/// Recycles tensor storage by exact size. A training step makes the same shapes every
/// time, so after the first step every activation and gradient comes from here: no page
/// faults, no zeroing by the kernel, no malloc, not even for the storage object.
///
/// The pool keeps a reference to every storage it hands out, and a storage is idle when
/// that reference is its only one. Swift frees an object when its last reference goes, so
/// recycling the buffer alone (from the storage's `deinit`) would still allocate a new
/// storage object for every tensor; keeping the objects makes the steady state allocate
/// nothing. A tensor asks ``isUniquelyReferenced(_:)`` before it writes, which sets the
/// pool's reference aside for the check (copy-on-write would otherwise copy every time).
///
/// Under the sanitizers nothing is pooled: every storage is freed when its last tensor
/// goes. AddressSanitizer then reports any use of memory a tensor no longer owns; and
/// ThreadSanitizer cannot see the ordering between one thread dropping a tensor and
/// another reusing its storage, which the reference count gives (an atomic release, then
/// the uniqueness check's acquire) but which happens inside the uninstrumented runtime.
///
/// `@unchecked Sendable`: `sizes` and the size classes' lists are read and written only
/// with `lock` held.
public final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()

    private init() {}

    /// Storages kept per size; beyond this many in use at once (far more than a step
    /// makes) they are not pooled and go back to the system with their last tensor.
    private static let maximumPerSize = 256

    /// Every pooled storage of one element count; nil where one went back to the system.
    final class SizeClass {
        fileprivate var storages: [TensorStorage?] = []
        /// One array per shape of this size that a tensor has had, for storages to adopt:
        /// a storage moves between shapes of its size, and a new array for each move allocates.
        private var shapes: [[Int]] = []

        /// The array of `shape` this class keeps, made the first time.
        fileprivate func kept(_ shape: [Int]) -> [Int] {
            if let known = shapes.first(where: { $0 == shape }) { return known }
            shapes.append(BufferPool.copy(shape))
            return shapes[shapes.count - 1]
        }

        /// The index of a storage no tensor uses, preferring one last used with `shape`
        /// (shapes of equal size, such as `[64, N, 16, 16]` and `[256, N, 8, 8]`, share a class).
        fileprivate func idleIndex(preferring shape: [Int]) -> Int? {
            var idle: Int?
            for i in storages.indices.reversed() where isKnownUniquelyReferenced(&storages[i]) {
                if storages[i]!.shape == shape { return i }
                idle = idle ?? i
            }
            return idle
        }
    }

    private let lock = NSLock()
    private var sizes: [Int: SizeClass] = [:]
    private let pools = !Sanitizer.isActive

    /// The class of storages of `count` floats, made the first time; the lock must be held.
    private func sizeClass(_ count: Int) -> SizeClass {
        if let known = sizes[count] { return known }
        let size = SizeClass()
        sizes[count] = size
        return size
    }

    /// Uninitialized storage for `count` floats, for a tensor of `shape`, used by no other tensor.
    func storage(count: Int, shape: [Int]) -> TensorStorage {
        guard pools else { return TensorStorage(count: count, shape: Self.copy(shape), entry: nil) }
        return lock.withLock {
            let size = sizeClass(count)
            if let index = size.idleIndex(preferring: shape) {
                let storage = size.storages[index]!
                if storage.shape != shape { storage.shape = size.kept(shape) }
                return storage
            }
            let index = size.storages.firstIndex { $0 == nil } ?? size.storages.count
            guard index < Self.maximumPerSize else { return TensorStorage(count: count, shape: Self.copy(shape), entry: nil) }
            let storage = TensorStorage(count: count, shape: size.kept(shape), entry: (size, index))
            if index == size.storages.count { size.storages.append(storage) } else { size.storages[index] = storage }
            return storage
        }
    }

    /// Whether no tensor but the caller's uses `storage`: the pool's own reference does not count.
    func isUniquelyReferenced(_ storage: inout TensorStorage) -> Bool {
        guard let (size, index) = storage.entry else { return isKnownUniquelyReferenced(&storage) }
        return lock.withLock {
            size.storages[index] = nil
            defer { size.storages[index] = storage }
            return isKnownUniquelyReferenced(&storage)
        }
    }

    /// A copy of `shape` in new storage, so that the caller's array never escapes and can
    /// live on its stack.
    fileprivate static func copy(_ shape: [Int]) -> [Int] {
        // A scalar's `[]` is the shared empty array, whose header the initializer below would write.
        guard !shape.isEmpty else { return [] }
        return Array(unsafeUninitializedCapacity: shape.count) { buffer, initialized in
            initialized = buffer.initialize(fromContentsOf: shape)
        }
    }

    /// Returns the memory of every storage no tensor uses to the system (for example after
    /// training, before a long-lived process does something else).
    public static func releaseCachedMemory() {
        // Freed after the lock is released: other threads need not wait for the system.
        let idle = shared.lock.withLock {
            shared.sizes.values.flatMap { size in
                size.storages.indices.compactMap { i -> TensorStorage? in
                    guard isKnownUniquelyReferenced(&size.storages[i]) else { return nil }
                    defer { size.storages[i] = nil }
                    return size.storages[i]
                }
            }
        }
        withExtendedLifetime(idle) {}
    }
}

/// Whether the process runs under AddressSanitizer or ThreadSanitizer (`scripts/sanitize`),
/// whose runtimes then define their entry points.
enum Sanitizer {
    static let isActive = {
        let process = dlopen(nil, RTLD_LAZY)
        return dlsym(process, "__asan_init") != nil || dlsym(process, "__tsan_init") != nil
    }()
}

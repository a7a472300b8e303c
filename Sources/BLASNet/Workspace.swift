/// Scratch memory shared by the layers of one model, grown to the largest request
/// and then reused, so a steady-state step does not allocate its column matrices.
///
/// Only one layer uses it at a time: im2col fills it and the sgemm that follows
/// consumes it before the next layer runs.
public final class Workspace {
    private var storage: UnsafeMutablePointer<Float>
    private var capacity: Int

    /// An empty workspace; it grows to the largest scratch any of its layers asks for.
    public init() {
        capacity = 0
        storage = .allocateLineAligned(1)
    }

    deinit { storage.deallocateLineAligned() }

    /// A buffer of at least `count` floats, valid until the next call.
    func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            storage.deallocateLineAligned()
            storage = .allocateLineAligned(count)
            capacity = count
        }
        return storage
    }
}

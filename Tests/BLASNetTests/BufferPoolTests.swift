import Foundation
import Testing
@testable import BLASNet

struct BufferPoolTests {
    /// AddressSanitizer's own check, there only when the process runs under it
    /// (`scripts/sanitize address`).
    static let isPoisoned = dlsym(dlopen(nil, RTLD_LAZY), "__asan_address_is_poisoned").map {
        unsafeBitCast($0, to: (@convention(c) (UnsafeRawPointer) -> Int32).self)
    }

    /// The pool keeps a released tensor's memory allocated, so only the poisoning lets
    /// ASan report a read of it. A size no other test uses keeps the buffer ours.
    @Test(.enabled(if: isPoisoned != nil, "runs under AddressSanitizer"))
    func pooledBuffersArePoisonedUntilTakenAgain() throws {
        let isPoisoned = try #require(Self.isPoisoned)
        let count = 4099
        let pointer = BufferPool.shared.take(count)
        BufferPool.shared.give(pointer, count: count)
        #expect(isPoisoned(pointer) != 0 && isPoisoned(pointer + count - 1) != 0)
        let again = BufferPool.shared.take(count)
        #expect(again == pointer)
        #expect(isPoisoned(again) == 0 && isPoisoned(again + count - 1) == 0)
        BufferPool.shared.give(again, count: count)
    }
}

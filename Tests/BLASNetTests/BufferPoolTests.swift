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
        let pointer = BufferPool.shared.take(count, shape: [count]).0
        BufferPool.shared.give(pointer, count: count, shape: [count])
        #expect(isPoisoned(pointer) != 0 && isPoisoned(pointer + count - 1) != 0)
        let again = BufferPool.shared.take(count, shape: [count]).0
        #expect(again == pointer)
        #expect(isPoisoned(again) == 0 && isPoisoned(again + count - 1) == 0)
        BufferPool.shared.give(again, count: count, shape: [count])
    }
}

struct BufferPoolReuseTests {
    /// A released tensor's memory serves the next tensor of its size, whatever its shape,
    /// and each tensor keeps its own shape. A size no other test uses keeps the buffer ours.
    @Test func releasedMemoryServesTheNextTensorOfItsSize() {
        /// The address of a tensor of `shape` that is released on return.
        func released(_ shape: [Int]) -> UnsafePointer<Float> {
            Tensor(shape: shape, repeating: 1).withUnsafePointer { $0 }
        }
        let first = released([7, 313])
        #expect(released([313, 7]) == first)
        let again = Tensor(shape: [7, 313], repeating: 2)
        #expect(again.withUnsafePointer { $0 } == first)
        #expect(again.shape == [7, 313] && again.scalars.allSatisfy { $0 == 2 })
    }
}

import Foundation
import Testing
@testable import BLASNet

struct BufferPoolTests {
    /// AddressSanitizer's own check, there only when the process runs under it
    /// (`scripts/sanitize address`).
    static let isPoisoned = dlsym(dlopen(nil, RTLD_LAZY), "__asan_address_is_poisoned").map {
        unsafeBitCast($0, to: (@convention(c) (UnsafeRawPointer) -> Int32).self)
    }

    /// The address of a tensor of `shape` that is released on return.
    static func released(_ shape: [Int]) -> UnsafePointer<Float> {
        Tensor(shape: shape, repeating: 1).withUnsafePointer { $0 }
    }

    /// Under ASan nothing is pooled, so a released tensor's memory is really freed and
    /// ASan reports any later read of it.
    @Test(.enabled(if: isPoisoned != nil, "runs under AddressSanitizer"))
    func releasedMemoryIsFreedUnderAddressSanitizer() throws {
        let isPoisoned = try #require(Self.isPoisoned)
        let pointer = Self.released([4099])
        #expect(isPoisoned(pointer) != 0 && isPoisoned(pointer + 4098) != 0)
    }

    /// A released tensor's memory serves the next tensor of its size, whatever its shape,
    /// and each tensor keeps its own shape. A size no other test uses keeps the buffer ours.
    @Test(.enabled(if: !Sanitizer.isActive, "the pool is off under the sanitizers"))
    func releasedMemoryServesTheNextTensorOfItsSize() {
        let first = Self.released([7, 313])
        #expect(Self.released([313, 7]) == first)
        let again = Tensor(shape: [7, 313], repeating: 2)
        #expect(again.withUnsafePointer { $0 } == first)
        #expect(again.shape == [7, 313] && again.scalars.allSatisfy { $0 == 2 })
    }

    /// Releasing the cache frees only storages no tensor uses, and the pool serves new
    /// tensors of that size afterwards (into the holes it left).
    @Test func releasingTheCacheKeepsTensorsInUse() {
        let kept = Tensor(shape: [3, 307], repeating: 5)
        let address = kept.withUnsafePointer { $0 }
        _ = Self.released([3, 307])
        BufferPool.releaseCachedMemory()
        let a = Tensor(shape: [3, 307], repeating: 1), b = Tensor(shape: [307, 3], repeating: 2)
        #expect(a.withUnsafePointer { $0 } != address && b.withUnsafePointer { $0 } != address)
        #expect(kept.scalars.allSatisfy { $0 == 5 } && a.scalars.allSatisfy { $0 == 1 } && b.scalars.allSatisfy { $0 == 2 })
        #expect(a.shape == [3, 307] && b.shape == [307, 3])
    }

    /// The pool keeps a reference to every storage it handed out; it must neither hand out
    /// one a tensor still uses nor make a tensor that is the only user copy before a write.
    @Test func theOnlyTensorOfAStorageWritesInPlaceAndSharedOnesCopy() {
        var a = Tensor(shape: [5, 311], repeating: 1)
        let b = Tensor(shape: [5, 311], repeating: 2)
        let address = a.withUnsafePointer { $0 }
        #expect(b.withUnsafePointer { $0 } != address)
        let isUnique = a.isUniquelyReferenced()
        #expect(isUnique)
        a[0] = 3
        #expect(a.withUnsafePointer { $0 } == address)
        let copy = a
        a[1] = 4
        #expect(a.withUnsafePointer { $0 } != address && copy.withUnsafePointer { $0 } == address)
        #expect(copy[1] == 1 && a[1] == 4 && a[0] == 3 && b[0] == 2)
    }
}

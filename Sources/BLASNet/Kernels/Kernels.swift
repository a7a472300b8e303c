import Dispatch

/// Hot loops over raw buffers. Everything outside this folder reads like the math;
/// everything inside it trades clarity for speed and takes pointers, not arrays.
///
/// Kernels run between sgemm calls, never inside them, so they use the same cores as
/// OpenBLAS without oversubscribing: ``parallelFor(_:grain:_:)`` splits work over
/// ``BLAS/threads`` workers.
enum Kernels {
    /// Splits `0..<count` into one contiguous range per worker (none smaller than
    /// `grain`) and runs `body` on each, in parallel.
    static func parallelFor(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        let workers = min(BLAS.cachedThreads, max(1, count / max(grain, 1)))
        guard workers > 1 else { return body(0..<count) }
        withoutActuallyEscaping(body) { body in
            // Workers write disjoint ranges of raw buffers, which Sendable cannot express.
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                body((count * w / workers)..<(count * (w + 1) / workers))
            }
        }
    }
}

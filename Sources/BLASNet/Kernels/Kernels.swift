/// Hot loops over raw buffers. Everything outside this folder reads like the math;
/// everything inside it trades clarity for speed and takes pointers, not arrays.
///
/// Kernels run between sgemm calls, never inside them, so they use the same cores as
/// OpenBLAS without oversubscribing: ``parallelFor(_:grain:workers:_:)`` splits work over
/// ``BLAS/threads`` workers.
enum Kernels {
    /// Splits `0..<count` into one contiguous range per worker (none smaller than
    /// `grain`; at most `workers`) and runs `body` on each, in parallel.
    static func parallelFor(_ count: Int, grain: Int = 1, workers: Int = BLAS.cachedThreads,
                            _ body: (Range<Int>) -> Void) {
        let workers = min(workers, max(1, count / max(grain, 1)))
        guard workers > 1 else { return body(0..<count) }
        WorkerPool.shared.run(workers) { w in body((count * w / workers)..<(count * (w + 1) / workers)) }
    }
}

/// Sums over raw buffers. Float addition is not associative, so the compiler keeps a
/// scalar `s += x[i]` loop in order, one add per cycle at best; these keep eight lanes
/// in Float32 over blocks of ``sumBlock`` elements and add the block totals in Float64:
/// vectorized like PyTorch's cascade sums, and as accurate.
extension Kernels {
    typealias Lanes = SIMD8<Float>
    private static let sumBlock = 2048

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
    }

    /// `Σ_i f(i)` over `0..<m`, with `f` producing eight lanes at a time (`lanes`) or one
    /// element (`scalar`) for the tail of each block.
    ///
    /// Four accumulators, because each vector add waits for the previous one into the same
    /// register: with one, a sum over data already in cache ran at a quarter of the adder's rate.
    @inline(__always)
    static func blockedSum(_ m: Int, lanes: (Int) -> Lanes, scalar: (Int) -> Float) -> Double {
        var total = 0.0, i = 0
        while i < m {
            let end = min(i + sumBlock, m)
            var acc = (Lanes.zero, Lanes.zero, Lanes.zero, Lanes.zero)
            while i + 32 <= end {
                acc.0 += lanes(i)
                acc.1 += lanes(i + 8)
                acc.2 += lanes(i + 16)
                acc.3 += lanes(i + 24)
                i += 32
            }
            while i + 8 <= end {
                acc.0 += lanes(i)
                i += 8
            }
            var partial = Double(((acc.0 + acc.1) + (acc.2 + acc.3)).sum())
            while i < end {
                partial += Double(scalar(i))
                i += 1
            }
            total += partial
        }
        return total
    }

    /// `Σ x[i]` over `0..<m`.
    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count m: Int) -> Double {
        blockedSum(m, lanes: { load(x + $0) }, scalar: { x[$0] })
    }

    /// `Σ x[i]·y[i]` over `0..<m`.
    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count m: Int) -> Double {
        blockedSum(m, lanes: { load(x + $0) * load(y + $0) }, scalar: { x[$0] * y[$0] })
    }

    /// Whether every `x[i]` over `0..<m` is finite: `x·0` is 0 for finite `x` and NaN for
    /// ±∞ or NaN, so one vectorized sum answers for the whole buffer.
    static func allFinite(_ x: UnsafePointer<Float>, count m: Int) -> Bool {
        !blockedSum(m, lanes: { load(x + $0) * 0 }, scalar: { x[$0] * 0 }).isNaN
    }
}

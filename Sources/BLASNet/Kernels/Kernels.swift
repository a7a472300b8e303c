/// Hot loops over raw buffers. Everything outside this folder reads like the math;
/// everything inside it trades clarity for speed and takes pointers, not arrays.
///
/// Kernels run between sgemm calls, never inside them, so they use the same cores as
/// OpenBLAS without oversubscribing: ``parallelFor(_:grain:workers:_:_:)`` splits work over
/// ``BLAS/threads`` workers.
enum Kernels {
    /// Splits `0..<count` into one contiguous range per worker (none smaller than
    /// `grain`; at most `workers`) and runs `body(range, captures)` on each, in parallel.
    ///
    /// `body` must capture nothing: everything it reads comes in `captures` (a tuple of
    /// pointers, sizes and small structs), unpacked first thing:
    ///
    /// ```swift
    /// parallelFor(count, grain: elementGrain, (x, y)) { r, captures in
    ///     let (x, y) = captures
    ///     for i in r { y[i] = max(x[i], 0) }
    /// }
    /// ```
    ///
    /// The worker threads need `body` as an escaping closure, and an escaping closure
    /// that captures anything is a heap object, allocated on every call (at two threads,
    /// 419 of a ResNet-50 training step's 688 allocations). A closure literal that uses only
    /// its parameters has no context, so passing it costs nothing. A helper that runs its
    /// own caller's closure inside `body` would capture it, and one that passes that closure
    /// on in `captures` instead still made an allocation a call, even at -O. So helpers
    /// either pass their caller's body straight through (``BLAS/sgemmBatch(_:count:_:_:)``)
    /// or run inside the caller's `body` and take its closure non-escaping there, where it
    /// stays on the stack and inlines.
    static func parallelFor<Captures>(_ count: Int, grain: Int = 1, workers: Int = BLAS.cachedThreads,
                                      _ captures: Captures, _ body: @escaping (Range<Int>, Captures) -> Void) {
        let workers = min(workers, max(1, count / max(grain, 1)))
        guard workers > 1 else { return body(0..<count, captures) }
        WorkerPool.shared.run(count, workers: workers, captures, body)
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

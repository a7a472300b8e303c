import Foundation

/// One step's sgemm calls, layer by layer, to run alone on scratch operands, scheduled
/// as in the step, at the current thread count.
///
/// All calls share one scratch buffer, as large as the largest call's operands, so the
/// replay adds no more resident memory than that call. Its contents do not change the
/// time, as long as they are ordinary numbers (uninitialized memory could hold denormals
/// or NaNs, which run slower).
public final class GEMMReplay {
    /// Each layer's calls of one step.
    public let calls: [[Profiler.GEMMCall]]
    private let scratch: UnsafeMutablePointer<Float>

    /// The calls of one step of `layers`, whose records summed `steps` steps.
    public init(_ layers: [Profiler.LayerRecord], steps: Int) {
        calls = layers.map { Array($0.gemms.prefix($0.gemms.count / max(steps, 1))) }
        let count = max(1, calls.joined().map { Self.operandSizes($0).total }.max() ?? 1)
        scratch = .allocateLineAligned(count)
        scratch.initialize(repeating: 0.01, count: count)
    }

    deinit { scratch.deallocateLineAligned() }

    /// Floats of A, B and C as the call stores them (rows × row stride), for each of its
    /// `count` products, and of all of them together, each operand starting on a cache
    /// line as the step's do (tensors and workspaces are line-aligned).
    private static func operandSizes(_ call: Profiler.GEMMCall) -> (a: Int, b: Int, c: Int, total: Int) {
        let s = call.shape
        let (a, b, c) = ((s.transA ? s.k : s.m) * s.lda, (s.transB ? s.n : s.k) * s.ldb, s.m * s.ldc)
        return (a, b, c, lineAligned(call.count * a) + lineAligned(call.count * b) + call.count * c)
    }

    /// `floats` rounded up to whole 64-byte lines.
    private static func lineAligned(_ floats: Int) -> Int { (floats + 15) / 16 * 16 }

    /// Runs every call once; seconds per layer (0 for a layer without sgemms).
    public func run() -> [Double] {
        calls.map { layer in
            guard !layer.isEmpty else { return 0 }
            let start = DispatchTime.now().uptimeNanoseconds
            for call in layer { run(call) }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
    }

    private func run(_ call: Profiler.GEMMCall) {
        let shape = call.shape, sizes = Self.operandSizes(call)
        let a = scratch, b = a + Self.lineAligned(call.count * sizes.a), c = b + Self.lineAligned(call.count * sizes.b)
        guard call.count > 1 else {
            return BLAS.sgemm(shape, a: a, b: b, c: c)
        }
        BLAS.sgemmBatch(shape, count: call.count, (shape, a, b, c, sizes)) { range, captures in
            let (shape, a, b, c, sizes) = captures
            for i in range { BLAS.serialSGEMM(shape, a: a + i * sizes.a, b: b + i * sizes.b, c: c + i * sizes.c) }
        }
    }
}

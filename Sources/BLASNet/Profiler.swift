import Foundation

/// Records where a training or inference step spends its time: per layer, forward and
/// backward, and the exact sgemm shapes each layer issued (so they can be replayed
/// alone to measure how close the step runs to native GEMM speed).
///
/// Install one with ``Profiler/run(_:)``. Not for concurrent use.
public final class Profiler: LayerObserver {
    /// One sgemm call's shape: `C[m×n] = op(A)[m×k] · op(B)[k×n]`.
    public struct GEMMShape: Hashable, Sendable {
        public var transA: Bool, transB: Bool
        public var m: Int, n: Int, k: Int
        /// Multiply-adds ×2.
        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    }

    /// Time and GEMMs of one leaf layer, summed over the recorded steps.
    public struct LayerRecord: Sendable {
        public var name: String
        public var kind: String
        public var forwardSeconds = 0.0
        public var backwardSeconds = 0.0
        public var gemms: [GEMMShape] = []
        /// True for containers (blocks, stages), whose time is the sum of their layers'.
        public var isContainer = false
    }

    private let names: LayerNames
    private var index: [ObjectIdentifier: Int] = [:]
    private var records: [LayerRecord] = []
    /// Leaf layers (an SE block counts as one) in the order they first ran.
    public var layers: [LayerRecord] { records.filter { !$0.isContainer } }
    private var current: Int?

    /// Prepares to profile `model`, naming its layers by state_dict path.
    public init(_ model: any Module) {
        names = LayerNames(model)
    }

    /// Runs `body` with this profiler installed on the calling thread (models running on
    /// other threads meanwhile are not timed).
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        try LayerObservers.run(self, body)
    }

    /// Times one call of a layer; a layer timed while another is running marks that one a container.
    public func observe(_ module: any Module, backward: Bool, _ body: () throws -> Tensor) throws -> Tensor {
        let id = ObjectIdentifier(module)
        let slot: Int
        if let existing = index[id] {
            slot = existing
        } else {
            let label = names.label(module, owner: current.map { records[$0].name })
            slot = records.count
            index[id] = slot
            records.append(LayerRecord(name: label.name, kind: label.kind))
        }
        let outer = current
        if let outer { records[outer].isContainer = true }
        current = slot
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if backward { records[slot].backwardSeconds += seconds } else { records[slot].forwardSeconds += seconds }
            current = outer
        }
        return try body()
    }

    static func recordGEMM(_ shape: GEMMShape) {
        guard let profiler = LayerObservers.current as? Profiler, let slot = profiler.current else { return }
        profiler.records[slot].gemms.append(shape)
    }
}

extension Profiler.GEMMShape {
    /// Median seconds of this sgemm alone on scratch operands, at the current thread count.
    public func time(repeats: Int = 3) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: k * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        // Ordinary values: uninitialized memory could hold denormals or NaNs, which run slower.
        a.initialize(repeating: 0.01, count: m * k)
        b.initialize(repeating: 0.01, count: k * n)
        c.initialize(repeating: 0, count: m * n)
        let run = {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k,
                       a: a, lda: transA ? m : k, b: b, ldb: transB ? k : n, beta: 0, c: c, ldc: n)
        }
        run()
        let samples = (0..<repeats).map { _ in
            let start = DispatchTime.now().uptimeNanoseconds
            run()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        return samples.sorted()[samples.count / 2]
    }
}

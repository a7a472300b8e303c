import Foundation

/// Records where a training or inference step spends its time: per layer, forward and
/// backward, and the exact sgemm shapes each layer issued (so they can be replayed
/// alone to measure how close the step runs to native GEMM speed).
///
/// Install one with ``Profiler/run(_:)``. Not for concurrent use.
public final class Profiler: LayerObserver {
    /// One sgemm call as issued: `C[m×n] = op(A)[m×k] · op(B)[k×n] + β·C`, with the row
    /// strides of A, B and C as stored.
    public struct GEMMShape: Hashable, Sendable {
        public var transA: Bool, transB: Bool
        public var m: Int, n: Int, k: Int
        public var lda: Int, ldb: Int, ldc: Int
        /// 0 overwrites C (OpenBLAS zeroes it first), 1 adds to it (a gradient summed over chunks).
        public var beta: Float
        /// Multiply-adds ×2.
        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    }

    /// The sgemms a layer issued at one point: `count` independent calls of `shape` run
    /// together, spread over the workers (Winograd's 16 positions), or a single call that
    /// BLASNet splits over them (`count` 1). The replay schedules them the same way.
    public struct GEMMCall: Hashable, Sendable {
        public var shape: GEMMShape
        public var count: Int
        /// Multiply-adds ×2 of all `count` calls.
        public var flops: Double { Double(count) * shape.flops }
    }

    /// Time and GEMMs of one layer, summed over the recorded steps.
    public struct LayerRecord: Sendable {
        public var name: String
        public var kind: String
        public var forwardSeconds = 0.0
        public var backwardSeconds = 0.0
        public var gemms: [GEMMCall] = []
        /// True for containers (blocks, stages). Their seconds are their own code's only (a
        /// residual block's addition and ReLU), not their layers', which have records of their own.
        public var isContainer = false
    }

    private let names: LayerNames
    private var index: [ObjectIdentifier: Int] = [:]
    private var records: [LayerRecord] = []
    /// Every layer and container (an SE block counts as one layer) in the order it first
    /// ran. No time is counted twice: the records add up to the time of the observed calls.
    public var layers: [LayerRecord] { records }
    private var current: Int?
    /// Seconds the observed calls made from inside the current one have taken so far.
    private var nestedSeconds = 0.0

    /// Prepares to profile `model`, naming its layers by state_dict path.
    public init(_ model: any Module) {
        names = LayerNames(model)
    }

    /// Runs `body` with this profiler installed on the calling thread (models running on
    /// other threads meanwhile are not timed).
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        try LayerObservers.run(self, body)
    }

    /// Times one call of a layer; a layer timed while another is running marks that one a
    /// container, which keeps only the time outside such calls.
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
        let outerNestedSeconds = nestedSeconds
        nestedSeconds = 0
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let own = seconds - nestedSeconds
            if backward { records[slot].backwardSeconds += own } else { records[slot].forwardSeconds += own }
            nestedSeconds = outerNestedSeconds + seconds
            current = outer
        }
        return try body()
    }

    static func recordGEMM(_ shape: GEMMShape, count: Int = 1) {
        guard let profiler = LayerObservers.current as? Profiler, let slot = profiler.current else { return }
        profiler.records[slot].gemms.append(GEMMCall(shape: shape, count: count))
    }
}

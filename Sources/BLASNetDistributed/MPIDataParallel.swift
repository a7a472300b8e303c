import BLASNet
import CMPI
import Foundation

/// Data-parallel training over an ``MPIProcessGroup``, as PyTorch's DistributedDataParallel
/// does it: gradients are summed in buckets of about ``bucketCapacity`` floats, each
/// started (MPI_Iallreduce) as soon as the backward pass has produced all of its
/// gradients, so that communication runs while backward goes on through earlier layers.
///
/// Buckets fill in the order backward produces gradients, which is the same in every
/// process, so bucket `i` holds the same parameters everywhere.
public final class MPIDataParallel: DataParallel {
    public let group: MPIProcessGroup
    /// Floats per bucket before it is sent.
    public let bucketCapacity: Int
    /// Communication that backward did not hide, summed over the steps: seconds spent
    /// waiting for the buckets after backward returned.
    public private(set) var exposedSeconds = 0.0
    private var layout: ParameterLayout?
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var bufferSizes: [Int] = []

    /// `bucketCapacity` defaults to 1M floats (4 MB): big enough for MPI to run at full
    /// bandwidth, small enough that the first bucket leaves early in the backward pass.
    public init(group: MPIProcessGroup, bucketCapacity: Int = 1 << 20) {
        self.group = group
        self.bucketCapacity = max(bucketCapacity, 1)
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
    }

    public func sum(_ values: inout [Double]) throws {
        try group.sum(&values)
    }

    public func averageGradients(of model: any Module, during backward: () throws -> Void) throws {
        let buckets = newBuckets(for: model)
        try LayerObservers.run(buckets) { try backward() }
        let start = DispatchTime.now().uptimeNanoseconds
        try buckets.finish()
        exposedSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Sums every trainable gradient of `model` over the processes in one blocking pass
    /// after the fact: the communication alone, which ``exposedSeconds`` is measured against.
    public func sumGradientsBlocking(of model: any Module) throws {
        try newBuckets(for: model).finish()
    }

    /// Gives every process rank 0's buffers (BatchNorm's running statistics), as PyTorch
    /// DDP's `broadcast_buffers` does before each forward pass. Without synchronized
    /// BatchNorm each process updates them from its own shard; call this before evaluating,
    /// so that every process scores the model that rank 0 saves.
    public func broadcastBuffers(of model: any Module) throws {
        let buffers = model.namedBuffers().map(\.buffer)
        var state = Data()
        if group.isRoot {
            for b in buffers { b.value.withUnsafePointer { state.append(UnsafeBufferPointer(start: $0, count: b.value.count)) } }
        }
        let received = try group.broadcast(state)
        guard received.count == buffers.reduce(0, { $0 + $1.value.count }) * MemoryLayout<Float>.stride else {
            throw BLASNetError.invalidArgument("rank 0 sent \(received.count) bytes of buffers; this process's model differs")
        }
        var offset = 0
        for b in buffers {
            let bytes = b.value.count * MemoryLayout<Float>.stride
            b.value.withUnsafeMutablePointer { _ = received.copyBytes(to: UnsafeMutableRawBufferPointer(start: $0, count: bytes), from: offset..<offset + bytes) }
            offset += bytes
        }
    }

    /// Empty buckets for one pass over `model`'s gradients; the layout is kept while the model is the same.
    private func newBuckets(for model: any Module) -> GradientBuckets {
        if layout?.model !== model { layout = ParameterLayout(model) }
        return GradientBuckets(self, layout: layout!)
    }

    /// Bucket `index`'s buffer, at least `count` floats, kept for the following steps.
    fileprivate func buffer(_ index: Int, count: Int) -> UnsafeMutablePointer<Float> {
        if index == buffers.count {
            buffers.append(.allocate(capacity: count))
            bufferSizes.append(count)
        } else if bufferSizes[index] < count {
            buffers[index].deallocate()
            buffers[index] = .allocate(capacity: count)
            bufferSizes[index] = count
        }
        return buffers[index]
    }
}

/// Which parameters each module's backward pass completes: those of its whole subtree
/// (a container may run its children without the observer seeing them).
private struct ParameterLayout {
    let model: any Module
    let byModule: [ObjectIdentifier: [Parameter]]
    /// Every parameter, in state_dict order: the order for those no layer call reported.
    let all: [Parameter]

    init(_ model: any Module) {
        self.model = model
        var byModule: [ObjectIdentifier: [Parameter]] = [:]
        func walk(_ m: any Module) -> [Parameter] {
            let parameters = m.localParameters.map(\.parameter) + m.children.flatMap { walk($0.module) }
            byModule[ObjectIdentifier(m)] = parameters
            return parameters
        }
        all = walk(model)
        self.byModule = byModule
    }
}

/// One backward pass's buckets: gradients are copied into a bucket as their layers
/// finish, and each full bucket starts its sum at once.
private final class GradientBuckets: LayerObserver {
    private let owner: MPIDataParallel
    private let layout: ParameterLayout
    private var ready = Set<ObjectIdentifier>()
    private var pending: [Parameter] = []
    private var pendingCount = 0
    private var sent: [(parameters: [Parameter], buffer: UnsafeMutablePointer<Float>)] = []
    private var requests: [MPI_Request?] = []

    init(_ owner: MPIDataParallel, layout: ParameterLayout) {
        self.owner = owner
        self.layout = layout
    }

    func observe(_ module: any Module, backward: Bool, _ body: () throws -> Tensor) throws -> Tensor {
        let result = try body()
        guard backward else { return result }
        for parameter in layout.byModule[ObjectIdentifier(module)] ?? [] { try add(parameter) }
        try owner.group.progress(&requests)
        return result
    }

    private func add(_ parameter: Parameter) throws {
        guard parameter.requiresGrad, ready.insert(ObjectIdentifier(parameter)).inserted else { return }
        pending.append(parameter)
        pendingCount += parameter.value.count
        if pendingCount >= owner.bucketCapacity { try send() }
    }

    private func send() throws {
        guard !pending.isEmpty else { return }
        let buffer = owner.buffer(sent.count, count: pendingCount)
        var offset = 0
        for parameter in pending {
            let count = parameter.value.count
            // A parameter this process's backward did not reach still takes part, with zeros.
            parameter.withGradient { (buffer + offset).update(from: $0, count: count) }
            offset += count
        }
        requests.append(try owner.group.startSum(buffer, count: pendingCount))
        sent.append((pending, buffer))
        (pending, pendingCount) = ([], 0)
    }

    /// Sends what is left (gradients no layer call reported go last, in state_dict
    /// order), waits for every bucket, and writes the means back into the gradients.
    func finish() throws {
        for parameter in layout.all { try add(parameter) }
        try send()
        try owner.group.waitAll(&requests)
        let scale = 1 / Float(owner.group.size)
        for (parameters, buffer) in sent {
            var offset = 0
            for parameter in parameters {
                let count = parameter.value.count
                parameter.withGradient { grad in
                    for i in 0..<count { grad[i] = buffer[offset + i] * scale }
                }
                offset += count
            }
        }
    }
}

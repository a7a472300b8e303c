import Foundation

/// Batch normalization with PyTorch's semantics, one γ and β per channel, optionally
/// fused with the ReLU that follows it (one pass over memory instead of two).
///
/// `x: [C, N, H, W] -> y: same` (or `[C, N]` for vectors); statistics per channel over N·H·W.
/// Training normalizes with the biased batch variance and moves
/// `running_mean`/`running_var` toward the batch mean and *unbiased* variance by
/// `momentum`; inference uses the running statistics.
public final class BatchNorm: Module {
    public let channels: Int
    public let eps: Float
    public let momentum: Float
    public let weight: Parameter
    public let bias: Parameter
    /// Stored: a backward pass asks whether the model trains every step, and a list built
    /// on each call would allocate.
    public let localParameters: [(name: String, parameter: Parameter)]
    public let runningMean: Buffer
    public let runningVar: Buffer
    public let numBatchesTracked: Buffer
    /// Batch statistics and running-average updates when true; running statistics when false.
    public var training: Bool {
        get { mode.training }
        set { mode.training = newValue }
    }
    /// Inference mode whatever mode the model is put in (set by ``Module/freeze()``), so
    /// a frozen layer uses and keeps its running statistics; cleared, the layer is back
    /// in the model's mode.
    public var freezesStatistics: Bool {
        get { mode.frozen }
        set { mode.frozen = newValue }
    }
    private var mode = StatisticsMode()
    /// Applies `max(·, 0)` to the output, as `BatchNorm2d` followed by `ReLU` would.
    public let fusesReLU: Bool

    /// When true each forward also records its input's per-channel mean and biased
    /// variance in ``observedStatistics``, for ``DomainShift`` to compare with the running ones.
    public var observesInput = false
    public private(set) var observedStatistics: (mean: [Double], variance: [Double])?
    /// In data-parallel training, sums the per-channel statistics over the processes, so
    /// that every process normalizes with the global batch's mean and variance (forward)
    /// and back-propagates through them (PyTorch's SyncBatchNorm). Nil: this process's batch alone.
    public var synchronization: (any CrossProcessSum)?

    private var normalization = PlaneNormalization()
    private let name: String

    /// `nn.BatchNorm2d(channels, eps, momentum)`: γ = 1, β = 0, running mean 0 and
    /// variance 1; each training step moves the running statistics by `momentum`
    /// (`running = (1 − momentum)·running + momentum·batch`). PyTorch's `momentum=None`
    /// (a cumulative average) is not offered.
    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1, fusesReLU: Bool = false) throws {
        guard channels > 0 else { throw BLASNetError.invalidArgument("BatchNorm: channels must be positive, got \(channels)") }
        try PlaneNormalization.checkSettings(eps: eps, momentum: momentum, layer: "BatchNorm")
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        self.fusesReLU = fusesReLU
        name = "BatchNorm(\(channels))"
        weight = Parameter(Tensor(shape: [channels], repeating: 1))
        bias = Parameter(Tensor(shape: [channels]))
        localParameters = [("weight", weight), ("bias", bias)]
        runningMean = Buffer(Tensor(shape: [channels]))
        runningVar = Buffer(Tensor(shape: [channels], repeating: 1))
        numBatchesTracked = Buffer(Tensor(scalar: 0), kind: .int64)
    }

    public var localBuffers: [(name: String, buffer: Buffer)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
    }

    public func setTraining(_ training: Bool) { mode.setModel(training: training) }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count >= 2, x.shape[0] == channels else {
            throw BLASNetError.shapeMismatch(layer: name, expected: "[\(channels), N, …]", got: x.shape)
        }
        // One plane per channel: its N·H·W values are contiguous.
        let m = x.count / channels
        // An empty batch has nothing to normalize or to move the running statistics with;
        // PyTorch still counts it in num_batches_tracked.
        if training && m == 0 && synchronization == nil {
            numBatchesTracked.value[0] += 1
            normalization.prepare(channels: channels, samples: 1, planeSize: 0, groups: channels)
            normalization.useRunningStatistics(mean: runningMean.value, variance: runningVar.value, eps: eps)
            return normalization.forward(x, weight: weight, bias: bias, relu: fusesReLU)
        }
        // Synchronized, the count that matters is the global batch's (checked after the sum), as PyTorch's SyncBatchNorm.
        if training && m < 2 && synchronization == nil {
            throw BLASNetError.invalidArgument("\(name): training needs more than one value per channel (batch × height × width), got \(m) from an input of \(Self.pyTorchShape(x.shape))")
        }
        normalization.prepare(channels: channels, samples: 1, planeSize: m, groups: channels)
        if observesInput {
            var probe = normalization
            try probe.useBatchStatistics(of: x, eps: eps)
            observedStatistics = (probe.groupMean, probe.groupVariance)
        }
        guard training else {
            normalization.useRunningStatistics(mean: runningMean.value, variance: runningVar.value, eps: eps)
            return normalization.forward(x, weight: weight, bias: bias, relu: fusesReLU)
        }
        let y = try normalization.forwardWithBatchStatistics(x, eps: eps, synchronizedBy: synchronization,
                                                             weight: weight, bias: bias, relu: fusesReLU)
        guard normalization.statisticsCount >= 2 else {
            throw BLASNetError.invalidArgument("\(name): training needs more than one value per channel in the global batch, got an input of \(Self.pyTorchShape(x.shape)) in each process")
        }
        normalization.updateRunning(mean: runningMean, variance: runningVar, momentum: momentum)
        numBatchesTracked.value[0] += 1
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        try normalization.backward(dy, weight: weight, bias: bias, layer: name)
    }

    /// A channel-major `[C, N, …]` shape as PyTorch users know it, `[N, C, …]`.
    private static func pyTorchShape(_ shape: [Int]) -> [Int] {
        shape.count >= 2 ? [shape[1], shape[0]] + shape.dropFirst(2) : shape
    }
}

/// PyTorch's name for batch normalization of images `[C, N, H, W]`.
public typealias BatchNorm2d = BatchNorm
/// PyTorch's name for batch normalization of feature vectors `[F, N]`.
public typealias BatchNorm1d = BatchNorm

extension BatchNorm: RunningStatistics {}

extension BatchNorm: SpatialModule {
    public var spatialStructure: SpatialStructure { .pointwise }
}

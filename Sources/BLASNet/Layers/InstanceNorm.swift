/// Instance normalization with PyTorch's semantics (`nn.InstanceNorm2d`).
///
/// `x: [C, N, H, W] -> y: same`; each channel of each sample is normalized over its
/// `H × W` values with their mean and biased variance, then, with `affine`, scaled and
/// shifted per channel.
///
/// With `trackRunningStats`, training also moves `running_mean`/`running_var` by
/// `momentum` toward the batch average of the instance means and *unbiased* variances
/// (BatchNorm's rule, averaged over the samples), and inference normalizes with them.
/// As in PyTorch, `num_batches_tracked` is kept for the state dict but never counts:
/// `InstanceNorm2d.forward` does not increment it.
public final class InstanceNorm2d: Module {
    public let channels: Int
    public let eps: Float
    public let momentum: Float
    /// γ and β of shape `[C]` with `affine`, else nil.
    public let weight: Parameter?
    public let bias: Parameter?
    /// `running_mean`, `running_var` and `num_batches_tracked` with `trackRunningStats`, else nil.
    public let runningMean: Buffer?
    public let runningVar: Buffer?
    public let numBatchesTracked: Buffer?
    /// Instance statistics (and running-average updates) when true; in inference, the
    /// running statistics if tracked, else still the instance statistics.
    public var training: Bool {
        get { mode.training }
        set { mode.training = newValue }
    }

    private var normalization = PlaneNormalization()

    /// `nn.InstanceNorm2d`'s arguments and defaults: no affine parameters and no running
    /// statistics unless asked for.
    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = false,
                trackRunningStats: Bool = false) throws {
        guard channels > 0 else { throw BLASNetError.invalidArgument("InstanceNorm2d: channels must be positive, got \(channels)") }
        try PlaneNormalization.checkSettings(eps: eps, momentum: momentum, layer: "InstanceNorm2d")
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        weight = affine ? Parameter(Tensor(shape: [channels], repeating: 1)) : nil
        bias = affine ? Parameter(Tensor(shape: [channels])) : nil
        runningMean = trackRunningStats ? Buffer(Tensor(shape: [channels])) : nil
        runningVar = trackRunningStats ? Buffer(Tensor(shape: [channels], repeating: 1)) : nil
        numBatchesTracked = trackRunningStats ? Buffer(Tensor(scalar: 0), kind: .int64) : nil
    }

    public var localParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight), ("bias", bias)].compactMap { name, p in p.map { (name, $0) } }
    }
    public var localBuffers: [(name: String, buffer: Buffer)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
            .compactMap { name, b in b.map { (name, $0) } }
    }

    /// Inference mode whatever mode the model is put in (set by ``Module/freeze()``).
    public var freezesStatistics: Bool {
        get { mode.frozen }
        set { mode.frozen = newValue }
    }
    private var mode = StatisticsMode()

    public func setTraining(_ training: Bool) { mode.setModel(training: training) }

    private var name: String { "InstanceNorm2d(\(channels))" }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4, x.shape[0] == channels, x.count > 0 else {
            throw BLASNetError.shapeMismatch(layer: name, expected: "[\(channels), N, H, W]", got: x.shape)
        }
        let planeSize = x.shape[2] * x.shape[3]
        normalization.prepare(channels: channels, samples: x.shape[1], planeSize: planeSize, groups: channels)
        if let runningMean, let runningVar, !training {
            normalization.useRunningStatistics(mean: runningMean.value, variance: runningVar.value, eps: eps)
            return normalization.forward(x, weight: weight, bias: bias, relu: false)
        }
        guard planeSize > 1 else {
            throw BLASNetError.invalidArgument("\(name): instance statistics need more than one spatial element, got input \(x.shape)")
        }
        let y = try normalization.forwardWithBatchStatistics(x, eps: eps, weight: weight, bias: bias, relu: false)
        if let runningMean, let runningVar {
            normalization.updateRunning(mean: runningMean, variance: runningVar, momentum: momentum)
        }
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        try normalization.backward(dy, weight: weight, bias: bias, layer: name)
    }
}

extension InstanceNorm2d: RunningStatistics {}

extension InstanceNorm2d: SpatialModule {
    /// Pointwise, as BatchNorm: the statistics reach the whole plane, which receptive
    /// fields leave out as they do a BatchNorm's batch statistics.
    public var spatialStructure: SpatialStructure { .pointwise }
}

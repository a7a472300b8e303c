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
    public let runningMean: Buffer
    public let runningVar: Buffer
    public let numBatchesTracked: Buffer
    /// Batch statistics and running-average updates when true; running statistics when false.
    public var training = true
    /// Applies `max(·, 0)` to the output, as `BatchNorm2d` followed by `ReLU` would.
    public let fusesReLU: Bool

    private var input: Tensor?
    private var output: Tensor?
    private var usedBatchStatistics = true
    private var mean: [Double] = []
    private var invStd: [Float] = []

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1, fusesReLU: Bool = false) throws {
        guard channels > 0 else { throw BLASNetError.invalidArgument("BatchNorm: channels must be positive, got \(channels)") }
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        self.fusesReLU = fusesReLU
        weight = Parameter(Tensor(shape: [channels], repeating: 1))
        bias = Parameter(Tensor(shape: [channels]))
        runningMean = Buffer(Tensor(shape: [channels]))
        runningVar = Buffer(Tensor(shape: [channels], repeating: 1))
        numBatchesTracked = Buffer(Tensor(scalar: 0), kind: .int64)
    }

    public var localParameters: [(name: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }
    public var localBuffers: [(name: String, buffer: Buffer)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
    }

    public func setTraining(_ training: Bool) { self.training = training }

    private func perChannel(_ x: Tensor) throws -> Int {
        guard x.shape.count >= 2, x.shape[0] == channels else {
            throw BLASNetError.shapeMismatch(layer: "BatchNorm(\(channels))", expected: "[\(channels), N, …]", got: x.shape)
        }
        return x.count / channels
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        let m = try perChannel(x)
        if training {
            guard m > 1 else {
                throw BLASNetError.invalidArgument(
                    "BatchNorm(\(channels)): training needs more than one value per channel, got input \(x.shape)")
            }
            var variance = [Double](repeating: 0, count: channels)
            mean = [Double](repeating: 0, count: channels)
            x.withUnsafePointer { Kernels.channelMoments($0, channels: channels, m: m, mean: &mean, variance: &variance) }
            invStd = variance.map { Float(1 / ($0 + Double(eps)).squareRoot()) }
            updateRunningStatistics(variance: variance, m: m)
        } else {
            mean = runningMean.value.scalars.map(Double.init)
            invStd = runningVar.value.scalars.map { 1 / ($0 + eps).squareRoot() }
        }
        usedBatchStatistics = training
        let gamma = weight.value.scalars, beta = bias.value.scalars
        let scale = (0..<channels).map { gamma[$0] * invStd[$0] }
        let shift = (0..<channels).map { beta[$0] - Float(mean[$0]) * scale[$0] }
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.channelAffine(xp, $0, channels: channels, m: m, scale: scale, shift: shift, relu: fusesReLU)
            }
        }
        input = x
        output = fusesReLU ? y : nil
        return y
    }

    private func updateRunningStatistics(variance: [Double], m: Int) {
        let unbiased = Double(m) / Double(m - 1)
        var runningMean = self.runningMean.value.scalars, runningVar = self.runningVar.value.scalars
        for c in 0..<channels {
            runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(mean[c])
            runningVar[c] = (1 - momentum) * runningVar[c] + momentum * Float(variance[c] * unbiased)
        }
        self.runningMean.value.scalars = runningMean
        self.runningVar.value.scalars = runningVar
        numBatchesTracked.value[0] += 1
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input else { throw BLASNetError.invalidArgument("BatchNorm(\(channels)): backward called before forward") }
        guard dy.shape == x.shape else {
            throw BLASNetError.shapeMismatch(layer: "BatchNorm(\(channels)) backward", expected: "\(x.shape)", got: dy.shape)
        }
        let y = output
        (input, output) = (nil, nil)
        let m = x.count / channels
        var sumDy = [Double](repeating: 0, count: channels), sumDyXc = [Double](repeating: 0, count: channels)
        withOptionalPointer(y) { yp in
            dy.withUnsafePointer { g in
                x.withUnsafePointer {
                    Kernels.channelGradientSums(g, $0, output: yp, channels: channels, m: m, mean: mean, sumDy: &sumDy, sumDyXc: &sumDyXc)
                }
            }
        }
        if weight.requiresGrad {
            weight.grad.withUnsafeMutablePointer { g in for c in 0..<channels { g[c] += Float(sumDyXc[c]) * invStd[c] } }
        }
        if bias.requiresGrad {
            bias.grad.withUnsafeMutablePointer { g in for c in 0..<channels { g[c] += Float(sumDy[c]) } }
        }
        // With batch statistics, the mean and variance depend on x too, which adds the
        // two projection terms; with running statistics the layer is affine in x.
        let gamma = weight.value.scalars
        let k = (0..<channels).map { gamma[$0] * invStd[$0] }
        let a = (0..<channels).map { usedBatchStatistics ? Float(sumDy[$0] / Double(m)) : 0 }
        let b = (0..<channels).map { usedBatchStatistics ? Float(sumDyXc[$0] / Double(m)) * invStd[$0] * invStd[$0] : 0 }
        var dx = Tensor(uninitializedShape: x.shape)
        withOptionalPointer(y) { yp in
            dy.withUnsafePointer { g in
                x.withUnsafePointer { xp in
                    dx.withUnsafeMutablePointer {
                        Kernels.channelNormInputGradient(g, xp, output: yp, $0, channels: channels, m: m, mean: mean, k: k, a: a, b: b)
                    }
                }
            }
        }
        return dx
    }
}

/// PyTorch's name for batch normalization of images `[C, N, H, W]`.
public typealias BatchNorm2d = BatchNorm
/// PyTorch's name for batch normalization of feature vectors `[F, N]`.
public typealias BatchNorm1d = BatchNorm

extension BatchNorm: SpatialModule {
    public var spatialStructure: SpatialStructure { .pointwise }
}

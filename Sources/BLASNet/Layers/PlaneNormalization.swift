/// The arithmetic BatchNorm, GroupNorm and InstanceNorm2d share: one pass of a
/// normalization over channel-major data, forward and backward.
///
/// The data `[C, N, S]` is `C·N` planes of `S` elements, plane `p = c·N + n` holding
/// channel `c` of sample `n`. Every normalization here subtracts a mean and divides by a
/// standard deviation that are constant over a plane, then applies the per-channel
/// affine `γ_c·x̂ + β_c`. The statistics are either
/// - *batch statistics*, one mean and biased variance per group `s = g·N + n`: the `C/G`
///   consecutive channels of group `g` for sample `n` (GroupNorm; InstanceNorm is
///   `G = C`, BatchNorm views its input as `[C, 1, N·S]` with `G = C`); or
/// - *running statistics*, given per channel, which make the layer affine in `x`.
///
/// A layer keeps one for its whole life: ``prepare(channels:samples:planeSize:groups:)``
/// sizes the per-plane, per-group and per-channel buffers once, and every later pass of
/// the same geometry reuses them, so a training step allocates nothing here.
struct PlaneNormalization {
    private var channels = 0
    private var samples = 0
    private var planeSize = 0
    private var groups = 0
    /// Mean and `1/√(σ² + ε)` that normalize each plane.
    private var mean: [Double] = []
    private var invStd: [Float] = []
    /// Each group's mean and biased variance, from the last forward with batch statistics
    /// (``forwardWithBatchStatistics(_:eps:synchronizedBy:weight:bias:relu:)`` or ``useBatchStatistics(of:eps:synchronizedBy:)``).
    private(set) var groupMean: [Double] = []
    private(set) var groupVariance: [Double] = []
    /// With batch statistics, the mean and variance depend on `x` too, which the backward pass follows.
    private var batchStatistics = false
    /// Elements each group statistic was taken over: the group's size, or with
    /// synchronized statistics its size summed over the processes.
    private var count = 0.0
    /// Elements each statistic of the last batch was taken over, in all processes together.
    var statisticsCount: Double { count }
    /// Sums the statistics across processes (sync BatchNorm), forward and backward.
    private var synchronization: (any CrossProcessSum)?
    private var input: Tensor?
    /// The clamped output of a fused ReLU, whose positive entries pass gradient.
    private var output: Tensor?
    /// Scratch of the passes: the per-plane affine of the forward, the per-plane sums and
    /// coefficients of the backward, and what they add up to per group and per channel.
    private var scale: [Float] = [], shift: [Float] = []
    private var sumDy: [Double] = [], sumDyXc: [Double] = []
    private var k: [Float] = [], a: [Float] = [], b: [Float] = []
    private var groupDy: [Double] = [], groupDyXc: [Double] = []
    private var dGamma: [Double] = [], dBeta: [Double] = []

    /// Throws unless `eps` is finite and non-negative and `momentum` (for running
    /// statistics) lies in 0...1: anything else turns outputs or running statistics to NaN.
    static func checkSettings(eps: Float, momentum: Float = 0, layer: String) throws {
        guard eps >= 0, eps.isFinite, (0...1).contains(momentum) else {
            throw BLASNetError.invalidArgument("\(layer): eps \(eps) must be finite and non-negative and momentum \(momentum) in 0...1")
        }
    }

    /// Sets the geometry of the next pass; the buffers are reallocated only when it changes.
    /// A pending backward pass is dropped: its statistics are about to be overwritten.
    mutating func prepare(channels: Int, samples: Int, planeSize: Int, groups: Int) {
        (self.channels, self.samples, self.planeSize, self.groups) = (channels, samples, planeSize, groups)
        (input, output) = (nil, nil)
        for buffer in [\Self.mean, \.sumDy, \.sumDyXc] { resize(buffer, to: planes) }
        for buffer in [\Self.invStd, \.scale, \.shift, \.k, \.a, \.b] { resize(buffer, to: planes) }
        for buffer in [\Self.groupMean, \.groupVariance, \.groupDy, \.groupDyXc] { resize(buffer, to: groups * samples) }
        for buffer in [\Self.dGamma, \.dBeta] { resize(buffer, to: channels) }
    }

    private mutating func resize<T: BinaryFloatingPoint>(_ buffer: WritableKeyPath<Self, [T]>, to count: Int) {
        if self[keyPath: buffer].count != count { self[keyPath: buffer] = Array(repeating: 0, count: count) }
    }

    private var planes: Int { channels * samples }
    /// Elements each group statistic is taken over.
    private var groupSize: Int { channels / groups * planeSize }

    /// The statistics group of plane `p = c·N + n`: `g·N + n` with `g = c / (C/G)`.
    private func group(ofPlane p: Int) -> Int {
        (p / samples / (channels / groups)) * samples + p % samples
    }

    /// Normalizes with the statistics of `x`, or with `synchronization` those of `x` in
    /// every process together; ``groupMean`` and ``groupVariance`` receive each group's
    /// mean and biased variance.
    mutating func useBatchStatistics(of x: Tensor, eps: Float,
                                     synchronizedBy synchronization: (any CrossProcessSum)? = nil) throws {
        let (channels, samples, planeSize, groups) = (channels, samples, planeSize, groups)
        x.withUnsafePointer {
            Kernels.groupMoments($0, channels: channels, samples: samples, planeSize: planeSize, groups: groups,
                                 mean: &groupMean, variance: &groupVariance)
        }
        count = Double(groupSize)
        if let synchronization {
            // Counts, sums and sums of squares add up over the processes to the global batch's.
            let n = groupMean.count
            var totals = [count] + groupMean.map { count * $0 } + zip(groupMean, groupVariance).map { count * ($1 + $0 * $0) }
            try synchronization.sum(&totals)
            count = totals[0]
            for s in 0..<n {
                groupMean[s] = totals[1 + s] / count
                let variance = totals[1 + n + s] / count - groupMean[s] * groupMean[s]
                groupVariance[s] = variance < 0 ? 0 : variance // keeps a NaN (see Kernels' plane statistics)
            }
        }
        self.synchronization = synchronization
        for p in 0..<planes {
            let s = group(ofPlane: p)
            mean[p] = groupMean[s]
            invStd[p] = Kernels.inverseStandardDeviation(variance: groupVariance[s], eps: eps)
        }
        batchStatistics = true
    }

    /// Normalizes with per-channel running statistics.
    mutating func useRunningStatistics(mean runningMean: Tensor, variance runningVar: Tensor, eps: Float) {
        runningMean.withUnsafePointer { m in
            runningVar.withUnsafePointer { v in
                for p in 0..<planes {
                    mean[p] = Double(m[p / samples])
                    invStd[p] = 1 / (v[p / samples] + eps).squareRoot()
                }
            }
        }
        batchStatistics = false
        // Nothing to sum over the processes in a backward through fixed statistics.
        synchronization = nil
    }

    /// Whether each statistics group is a single plane and no other process's statistics
    /// are waited for, so that a pass can finish one plane before it starts the next.
    private func groupsArePlanes(synchronizedBy synchronization: (any CrossProcessSum)?) -> Bool {
        groups == channels && synchronization == nil
    }

    /// ``useBatchStatistics(of:eps:synchronizedBy:)`` followed by ``forward(_:weight:bias:relu:)``;
    /// in one pass over memory when each group is a single plane (BatchNorm, InstanceNorm).
    mutating func forwardWithBatchStatistics(_ x: Tensor, eps: Float, synchronizedBy synchronization: (any CrossProcessSum)? = nil,
                                             weight: Parameter?, bias: Parameter?, relu: Bool) throws -> Tensor {
        guard groupsArePlanes(synchronizedBy: synchronization) else {
            try useBatchStatistics(of: x, eps: eps, synchronizedBy: synchronization)
            return forward(x, weight: weight, bias: bias, relu: relu)
        }
        let (planes, samples, planeSize) = (planes, samples, planeSize)
        var y = Tensor(uninitializedShape: x.shape)
        withOptionalPointer(weight?.value) { gamma in
            withOptionalPointer(bias?.value) { beta in
                x.withUnsafePointer { xp in
                    y.withUnsafeMutablePointer {
                        Kernels.planeNormalize(xp, $0, planes: planes, samples: samples, planeSize: planeSize, gamma: gamma,
                                               beta: beta, eps: eps, relu: relu, mean: &groupMean, variance: &groupVariance,
                                               invStd: &invStd)
                    }
                }
            }
        }
        for p in 0..<planes { mean[p] = groupMean[p] }
        (count, self.synchronization, batchStatistics) = (Double(planeSize), nil, true)
        (input, output) = (x.keptForBackward, relu ? y.keptForBackward : nil)
        return y
    }

    /// `y = γ_c·(x − μ)/σ + β_c` (γ = 1 and β = 0 without an affine), clamped at zero when `relu`.
    mutating func forward(_ x: Tensor, weight: Parameter?, bias: Parameter?, relu: Bool) -> Tensor {
        let (planes, planeSize) = (planes, planeSize)
        withOptionalPointer(weight?.value) { gamma in
            withOptionalPointer(bias?.value) { beta in
                for p in 0..<planes {
                    scale[p] = (gamma?[p / samples] ?? 1) * invStd[p]
                    shift[p] = (beta?[p / samples] ?? 0) - Float(mean[p]) * scale[p]
                }
            }
        }
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.planeAffine(xp, $0, planes: planes, planeSize: planeSize, scale: scale, shift: shift, relu: relu)
            }
        }
        (input, output) = (x.keptForBackward, relu ? y.keptForBackward : nil)
        return y
    }

    /// The input gradient of ``forward(_:weight:bias:relu:)``; adds the gradients of γ and β
    /// into `weight` and `bias`.
    ///
    /// With `ĝ = γ_c·g` and `x̂ = (x − μ)/σ`, a group of `M` elements has
    /// `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ`; with running statistics only `ĝ/σ` remains.
    mutating func backward(_ dy: Tensor, weight: Parameter?, bias: Parameter?, layer: @autoclosure () -> String) throws -> Tensor {
        guard let x = input else { throw BLASNetError.backwardWithoutForward(layer()) }
        guard dy.shape == x.shape else {
            throw BLASNetError.shapeMismatch(layer: "\(layer()) backward", expected: "\(x.shape)", got: dy.shape)
        }
        let y = output
        (input, output) = (nil, nil)
        let dx = batchStatistics && groupsArePlanes(synchronizedBy: synchronization)
            ? onePassInputGradient(dy, x: x, output: y, weight: weight)
            : try twoPassInputGradient(dy, x: x, output: y, weight: weight)
        for c in 0..<channels { (dGamma[c], dBeta[c]) = (0, 0) }
        for p in 0..<planes {
            dBeta[p / samples] += sumDy[p]
            dGamma[p / samples] += sumDyXc[p] * Double(invStd[p])
        }
        weight?.accumulate(dGamma)
        bias?.accumulate(dBeta)
        return dx
    }

    /// The input gradient when each group is a single plane, one plane at a time; fills
    /// `sumDy` and `sumDyXc`.
    private mutating func onePassInputGradient(_ dy: Tensor, x: Tensor, output y: Tensor?, weight: Parameter?) -> Tensor {
        let (planes, samples, planeSize) = (planes, samples, planeSize)
        var dx = Tensor(uninitializedShape: x.shape)
        withOptionalPointer(y) { yp in
            withOptionalPointer(weight?.value) { gamma in
                dy.withUnsafePointer { g in
                    x.withUnsafePointer { xp in
                        dx.withUnsafeMutablePointer {
                            Kernels.planeNormBackward(g, xp, output: yp, $0, planes: planes, samples: samples, planeSize: planeSize,
                                                      gamma: gamma, mean: mean, invStd: invStd, sumDy: &sumDy, sumDyXc: &sumDyXc)
                        }
                    }
                }
            }
        }
        return dx
    }

    /// The input gradient in two passes over the whole tensor: every plane's sums, then
    /// (after adding them up per group, and over the processes when synchronized) `dx`.
    private mutating func twoPassInputGradient(_ dy: Tensor, x: Tensor, output y: Tensor?, weight: Parameter?) throws -> Tensor {
        let (planes, planeSize) = (planes, planeSize)
        withOptionalPointer(y) { yp in
            dy.withUnsafePointer { g in
                x.withUnsafePointer {
                    Kernels.planeGradientSums(g, $0, output: yp, planes: planes, planeSize: planeSize, mean: mean,
                                              sumDy: &sumDy, sumDyXc: &sumDyXc)
                }
            }
        }
        for s in groupDy.indices { (groupDy[s], groupDyXc[s]) = (0, 0) }
        withOptionalPointer(weight?.value) { gamma in
            for p in 0..<planes {
                let s = group(ofPlane: p), gc = Double(gamma?[p / samples] ?? 1)
                groupDy[s] += gc * sumDy[p]
                groupDyXc[s] += gc * sumDyXc[p]
            }
        }
        if let synchronization {
            // γ and β keep this process's gradients (data parallelism averages them); x's
            // gradient follows the global statistics, so it needs the global sums.
            var totals = groupDy + groupDyXc
            try synchronization.sum(&totals)
            groupDy = Array(totals[..<groupDy.count])
            groupDyXc = Array(totals[groupDy.count...])
        }
        withOptionalPointer(weight?.value) { gamma in
            for p in 0..<planes {
                let g = group(ofPlane: p)
                (k[p], a[p], b[p]) = Kernels.inputGradientCoefficients(gamma: gamma?[p / samples] ?? 1, invStd: invStd[p],
                                                                       groupDy: groupDy[g], groupDyXc: groupDyXc[g], count: count)
                // Running statistics do not depend on x: only `k·g` remains.
                if !batchStatistics { (a[p], b[p]) = (0, 0) }
            }
        }
        var dx = Tensor(uninitializedShape: x.shape)
        withOptionalPointer(y) { yp in
            dy.withUnsafePointer { g in
                x.withUnsafePointer { xp in
                    dx.withUnsafeMutablePointer {
                        Kernels.planeNormInputGradient(g, xp, output: yp, $0, planes: planes, planeSize: planeSize,
                                                       mean: mean, k: k, a: a, b: b)
                    }
                }
            }
        }
        return dx
    }

    /// PyTorch's update of `running_mean`/`running_var` from the last batch statistics of
    /// a normalization with one group per channel (`G = C`): each moves toward the mean
    /// over the samples of its groups' means and *unbiased* variances by `momentum`.
    func updateRunning(mean runningMean: Buffer, variance runningVar: Buffer, momentum: Float) {
        precondition(groups == channels, "running statistics are per channel")
        let unbiased = count / (count - 1), n = Double(samples)
        runningMean.value.withUnsafeMutablePointer { m in
            runningVar.value.withUnsafeMutablePointer { v in
                for c in 0..<channels {
                    let groupsOfC = (c * samples)..<((c + 1) * samples)
                    let batchMean = groupsOfC.reduce(0) { $0 + groupMean[$1] } / n
                    let batchVar = groupsOfC.reduce(0) { $0 + groupVariance[$1] } * unbiased / n
                    m[c] = (1 - momentum) * m[c] + momentum * Float(batchMean)
                    v[c] = (1 - momentum) * v[c] + momentum * Float(batchVar)
                }
            }
        }
    }
}

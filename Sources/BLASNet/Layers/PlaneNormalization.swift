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
struct PlaneNormalization {
    let channels: Int
    let samples: Int
    let planeSize: Int
    let groups: Int
    /// Mean and `1/√(σ² + ε)` that normalize each plane.
    private var mean: [Double] = []
    private var invStd: [Float] = []
    /// With batch statistics, the mean and variance depend on `x` too, which the backward pass follows.
    private var batchStatistics = false
    /// Elements each group statistic was taken over: the group's size, or with
    /// synchronized statistics its size summed over the processes.
    private var count = 0.0
    /// Sums the statistics across processes (sync BatchNorm), forward and backward.
    private var synchronization: (any CrossProcessSum)?
    private var input: Tensor?
    /// The clamped output of a fused ReLU, whose positive entries pass gradient.
    private var output: Tensor?

    init(channels: Int, samples: Int, planeSize: Int, groups: Int) {
        (self.channels, self.samples, self.planeSize, self.groups) = (channels, samples, planeSize, groups)
    }

    private var planes: Int { channels * samples }
    /// Elements each group statistic is taken over.
    private var groupSize: Int { channels / groups * planeSize }

    /// The statistics group of plane `p = c·N + n`: `g·N + n` with `g = c / (C/G)`.
    private func group(ofPlane p: Int) -> Int {
        (p / samples / (channels / groups)) * samples + p % samples
    }

    /// Normalizes with the statistics of `x`, or with `synchronization` those of `x` in
    /// every process together; returns each group's mean and biased variance.
    @discardableResult
    mutating func useBatchStatistics(of x: Tensor, eps: Float,
                                     synchronizedBy synchronization: (any CrossProcessSum)? = nil) throws
        -> (mean: [Double], variance: [Double]) {
        var groupMean = [Double](repeating: 0, count: groups * samples), groupVariance = groupMean
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
                groupVariance[s] = max(0, totals[1 + n + s] / count - groupMean[s] * groupMean[s])
            }
            self.synchronization = synchronization
        }
        let groupInvStd = groupVariance.map { Float(1 / ($0 + Double(eps)).squareRoot()) }
        mean = (0..<planes).map { groupMean[group(ofPlane: $0)] }
        invStd = (0..<planes).map { groupInvStd[group(ofPlane: $0)] }
        batchStatistics = true
        return (groupMean, groupVariance)
    }

    /// Normalizes with per-channel running statistics.
    mutating func useRunningStatistics(mean runningMean: Tensor, variance runningVar: Tensor, eps: Float) {
        let m = runningMean.scalars, v = runningVar.scalars
        mean = (0..<planes).map { Double(m[$0 / samples]) }
        invStd = (0..<planes).map { 1 / (v[$0 / samples] + eps).squareRoot() }
        batchStatistics = false
    }

    /// `y = γ_c·(x − μ)/σ + β_c` (γ = 1 and β = 0 without an affine), clamped at zero when `relu`.
    mutating func forward(_ x: Tensor, weight: Parameter?, bias: Parameter?, relu: Bool) -> Tensor {
        let gamma = weight?.value.scalars, beta = bias?.value.scalars
        let scale = (0..<planes).map { (gamma?[$0 / samples] ?? 1) * invStd[$0] }
        let shift = (0..<planes).map { (beta?[$0 / samples] ?? 0) - Float(mean[$0]) * scale[$0] }
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.planeAffine(xp, $0, planes: planes, planeSize: planeSize, scale: scale, shift: shift, relu: relu)
            }
        }
        input = x
        output = relu ? y : nil
        return y
    }

    /// The input gradient of ``forward(_:weight:bias:relu:)``; adds the gradients of γ and β
    /// into `weight` and `bias`.
    ///
    /// With `ĝ = γ_c·g` and `x̂ = (x − μ)/σ`, a group of `M` elements has
    /// `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ`; with running statistics only `ĝ/σ` remains.
    mutating func backward(_ dy: Tensor, weight: Parameter?, bias: Parameter?, layer: String) throws -> Tensor {
        // Layers create a state in `forward`, which sets the input.
        guard let x = input else { preconditionFailure("\(layer): a normalization state without a forward pass") }
        guard dy.shape == x.shape else {
            throw BLASNetError.shapeMismatch(layer: "\(layer) backward", expected: "\(x.shape)", got: dy.shape)
        }
        let y = output
        (input, output) = (nil, nil)
        var sumDy = [Double](repeating: 0, count: planes), sumDyXc = sumDy
        withOptionalPointer(y) { yp in
            dy.withUnsafePointer { g in
                x.withUnsafePointer {
                    Kernels.planeGradientSums(g, $0, output: yp, planes: planes, planeSize: planeSize, mean: mean,
                                              sumDy: &sumDy, sumDyXc: &sumDyXc)
                }
            }
        }
        let gamma = weight?.value.scalars
        var dGamma = [Double](repeating: 0, count: channels), dBeta = dGamma
        var groupDy = [Double](repeating: 0, count: groups * samples), groupDyXc = groupDy
        for p in 0..<planes {
            let c = p / samples, s = group(ofPlane: p), gc = Double(gamma?[c] ?? 1)
            dBeta[c] += sumDy[p]
            dGamma[c] += sumDyXc[p] * Double(invStd[p])
            groupDy[s] += gc * sumDy[p]
            groupDyXc[s] += gc * sumDyXc[p]
        }
        if let synchronization {
            // γ and β keep this process's gradients (data parallelism averages them); x's
            // gradient follows the global statistics, so it needs the global sums.
            var totals = groupDy + groupDyXc
            try synchronization.sum(&totals)
            groupDy = Array(totals[..<groupDy.count])
            groupDyXc = Array(totals[groupDy.count...])
        }
        let k = (0..<planes).map { (gamma?[$0 / samples] ?? 1) * invStd[$0] }
        let a = (0..<planes).map { batchStatistics ? Float(Double(invStd[$0]) * groupDy[group(ofPlane: $0)] / count) : 0 }
        let b = (0..<planes).map { p -> Float in
            let s = Double(invStd[p])
            return batchStatistics ? Float(s * s * s * groupDyXc[group(ofPlane: p)] / count) : 0
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
        weight?.accumulate(dGamma)
        bias?.accumulate(dBeta)
        return dx
    }

    /// The backward pass of a layer's last forward, kept in `state`, which it clears.
    static func backward(_ state: inout PlaneNormalization?, _ dy: Tensor, weight: Parameter?, bias: Parameter?,
                         layer: String) throws -> Tensor {
        guard var pass = state else { throw BLASNetError.invalidArgument("\(layer): backward called before forward") }
        state = nil
        return try pass.backward(dy, weight: weight, bias: bias, layer: layer)
    }

    /// PyTorch's update of `running_mean`/`running_var` from the batch statistics of a
    /// normalization with one group per channel (`G = C`): each moves toward the mean over
    /// the samples of its groups' means and *unbiased* variances by `momentum`.
    func updateRunning(mean runningMean: Buffer, variance runningVar: Buffer, momentum: Float,
                       batch: (mean: [Double], variance: [Double])) {
        precondition(groups == channels, "running statistics are per channel")
        let unbiased = count / (count - 1), n = Double(samples)
        var newMean = runningMean.value.scalars, newVar = runningVar.value.scalars
        for c in 0..<channels {
            let groupsOfC = (c * samples)..<((c + 1) * samples)
            let batchMean = groupsOfC.reduce(0) { $0 + batch.mean[$1] } / n
            let batchVar = groupsOfC.reduce(0) { $0 + batch.variance[$1] } * unbiased / n
            newMean[c] = (1 - momentum) * newMean[c] + momentum * Float(batchMean)
            newVar[c] = (1 - momentum) * newVar[c] + momentum * Float(batchVar)
        }
        runningMean.value.scalars = newMean
        runningVar.value.scalars = newVar
    }
}

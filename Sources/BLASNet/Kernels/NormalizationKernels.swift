import Foundation

/// Kernels of the normalizations over channel-major data `[C, N, S]` seen as `C·N`
/// contiguous *planes* of `S` elements: plane `p = c·N + n` holds channel `c` of sample
/// `n` (BatchNorm views its input as `[C, 1, N·S]`, one plane per channel). Planes, or
/// statistics groups, are split over the workers.
///
/// Sums use ``Kernels/blockedSum(_:lanes:scalar:)``: eight Float32 lanes, Float64 block totals.
///
/// A normalization followed by a ReLU runs fused: the forward clamps as it writes, and
/// the backward reads the clamped output `y` as the mask instead of materializing
/// the masked gradient.
extension Kernels {
    /// Mean and biased variance of each statistics group `s = g·N + n`: the planes of
    /// channels `g·C/G ..< (g+1)·C/G` of sample `n`.
    static func groupMoments(_ x: UnsafePointer<Float>, channels: Int, samples: Int, planeSize: Int, groups: Int,
                             mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>) {
        let perGroup = channels / groups
        // Consecutive channels of one sample lie a channel's N planes apart.
        let channelStride = samples * planeSize
        parallelFor(groups * samples, (x, samples, planeSize, perGroup, channelStride, mean, variance)) { range, captures in
            let (x, samples, planeSize, perGroup, channelStride, mean, variance) = captures
            for s in range {
                let first = x + ((s / samples) * perGroup * samples + s % samples) * planeSize
                (mean[s], variance[s]) = moments(first, planes: perGroup, stride: channelStride, planeSize: planeSize)
            }
        }
    }

    /// Mean and biased variance over `planes` planes of `m` elements, `stride` apart (two
    /// passes, so the variance does not lose digits to cancellation).
    @inline(__always)
    private static func moments(_ first: UnsafePointer<Float>, planes: Int, stride: Int, planeSize m: Int)
        -> (mean: Double, variance: Double) {
        var total = 0.0
        for j in 0..<planes { total += sum(first + j * stride, count: m) }
        let count = Double(planes * m), mu = total / count, muf = Float(mu), muLanes = Lanes(repeating: muf)
        // Σ(x − μ)² around the Float32-rounded mean, corrected by the rounding offset.
        let offset = Double(muf) - mu
        var squares = 0.0
        for j in 0..<planes {
            let p = first + j * stride
            squares += blockedSum(m, lanes: { let d = load(p + $0) - muLanes; return d * d },
                                  scalar: { let d = p[$0] - muf; return d * d })
        }
        // Rounding can leave a constant plane's variance just below zero; `max(0, ·)` would
        // also turn a NaN (an infinite input) into 0, which PyTorch carries into running_var.
        let variance = squares / count - offset * offset
        return (mu, variance < 0 ? 0 : variance)
    }

    /// `y = x·scale[p] + shift[p]` per plane, clamped at zero when `relu`.
    static func planeAffine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, planes: Int, planeSize m: Int,
                            scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, relu: Bool) {
        parallelFor(planes, (x, y, m, scale, shift, relu)) { range, captures in
            let (x, y, m, scale, shift, relu) = captures
            for plane in range { affine(x + plane * m, y + plane * m, count: m, scale: scale[plane], shift: shift[plane], relu: relu) }
        }
    }

    @inline(__always)
    private static func affine(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count m: Int,
                               scale a: Float, shift b: Float, relu: Bool) {
        if relu {
            for i in 0..<m { dst[i] = max(src[i] * a + b, 0) }
        } else {
            for i in 0..<m { dst[i] = src[i] * a + b }
        }
    }

    /// Batch statistics and the affine `y = γ_c·(x − μ)/σ + β_c` (clamped at zero when
    /// `relu`) in one visit per plane, for normalizations whose statistics groups are
    /// single planes (BatchNorm, InstanceNorm): the affine re-reads a plane the moments
    /// have just brought into cache, instead of the whole tensor again from memory.
    /// Channel `c` of plane `p` is `p / samples`; `mean`, `variance` (biased) and `invStd`
    /// receive each plane's statistics.
    static func planeNormalize(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, planes: Int, samples: Int,
                               planeSize m: Int, gamma: UnsafePointer<Float>?, beta: UnsafePointer<Float>?, eps: Float,
                               relu: Bool, mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>,
                               invStd: UnsafeMutablePointer<Float>) {
        parallelFor(planes, (x, y, samples, m, gamma, beta, eps, relu, mean, variance, invStd)) { range, captures in
            let (x, y, samples, m, gamma, beta, eps, relu, mean, variance, invStd) = captures
            for plane in range {
                let src = x + plane * m, c = plane / samples
                let (mu, sigma2) = moments(src, planes: 1, stride: m, planeSize: m)
                let s = inverseStandardDeviation(variance: sigma2, eps: eps)
                let scale = (gamma?[c] ?? 1) * s
                (mean[plane], variance[plane], invStd[plane]) = (mu, sigma2, s)
                affine(src, y + plane * m, count: m, scale: scale, shift: (beta?[c] ?? 0) - Float(mu) * scale, relu: relu)
            }
        }
    }

    /// Sums `Σ g` and `Σ g·(x − mean)` of each plane, where `g = dy`, or `dy` masked
    /// by `output > 0` when a fused ReLU produced `output`.
    static func planeGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                  planes: Int, planeSize m: Int, mean: UnsafePointer<Double>,
                                  sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        parallelFor(planes, (dy, x, output, m, mean, sumDy, sumDyXc)) { range, captures in
            let (dy, x, output, m, mean, sumDy, sumDyXc) = captures
            for plane in range {
                (sumDy[plane], sumDyXc[plane]) = gradientSums(dy + plane * m, x + plane * m, output: output.map { $0 + plane * m },
                                                              count: m, mean: Float(mean[plane]))
            }
        }
    }

    @inline(__always)
    private static func gradientSums(_ g: UnsafePointer<Float>, _ p: UnsafePointer<Float>, output y: UnsafePointer<Float>?,
                                     count m: Int, mean mu: Float) -> (sumDy: Double, sumDyXc: Double) {
        let muLanes = Lanes(repeating: mu)
        guard let y else {
            return (blockedSum(m, lanes: { load(g + $0) }, scalar: { g[$0] }),
                    blockedSum(m, lanes: { load(g + $0) * (load(p + $0) - muLanes) }, scalar: { g[$0] * (p[$0] - mu) }))
        }
        @inline(__always) func masked(_ i: Int) -> Lanes {
            load(g + i).replacing(with: 0, where: load(y + i) .<= 0)
        }
        return (blockedSum(m, lanes: masked, scalar: { reluMasked(g, y, $0) }),
                blockedSum(m, lanes: { masked($0) * (load(p + $0) - muLanes) }, scalar: { reluMasked(g, y, $0) * (p[$0] - mu) }))
    }

    /// The input gradient of a normalization: `dx = k·g − a − (x − mean)·b` per plane,
    /// with `g` as in ``planeGradientSums(_:_:output:planes:planeSize:mean:sumDy:sumDyXc:)``.
    static func planeNormInputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                       _ dx: UnsafeMutablePointer<Float>, planes: Int, planeSize m: Int,
                                       mean: UnsafePointer<Double>, k: UnsafePointer<Float>,
                                       a: UnsafePointer<Float>, b: UnsafePointer<Float>) {
        parallelFor(planes, (dy, x, output, dx, m, mean, k, a, b)) { range, captures in
            let (dy, x, output, dx, m, mean, k, a, b) = captures
            for plane in range {
                inputGradient(dy + plane * m, x + plane * m, output: output.map { $0 + plane * m }, dx + plane * m, count: m,
                              mean: Float(mean[plane]), k: k[plane], a: a[plane], b: b[plane])
            }
        }
    }

    @inline(__always)
    private static func inputGradient(_ g: UnsafePointer<Float>, _ p: UnsafePointer<Float>, output y: UnsafePointer<Float>?,
                                      _ out: UnsafeMutablePointer<Float>, count m: Int, mean mu: Float, k: Float, a: Float, b: Float) {
        if let y {
            for i in 0..<m { out[i] = k * reluMasked(g, y, i) - a - (p[i] - mu) * b }
        } else {
            for i in 0..<m { out[i] = k * g[i] - a - (p[i] - mu) * b }
        }
    }

    /// The input gradient of ``planeNormalize(_:_:planes:samples:planeSize:gamma:beta:eps:relu:mean:variance:invStd:)``
    /// in one visit per plane: its sums, then `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ` with
    /// `ĝ = γ_c·g` while the plane's `dy`, `x` (and `output`) are still in cache. `sumDy`
    /// and `sumDyXc` receive each plane's sums, for the gradients of γ and β.
    static func planeNormBackward(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                  _ dx: UnsafeMutablePointer<Float>, planes: Int, samples: Int, planeSize m: Int,
                                  gamma: UnsafePointer<Float>?, mean: UnsafePointer<Double>, invStd: UnsafePointer<Float>,
                                  sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        parallelFor(planes, (dy, x, output, dx, samples, m, gamma, mean, invStd, sumDy, sumDyXc)) { range, captures in
            let (dy, x, output, dx, samples, m, gamma, mean, invStd, sumDy, sumDyXc) = captures
            for plane in range {
                let g = dy + plane * m, p = x + plane * m, y = output.map { $0 + plane * m }, mu = Float(mean[plane])
                let sums = gradientSums(g, p, output: y, count: m, mean: mu)
                (sumDy[plane], sumDyXc[plane]) = sums
                let gc = gamma?[plane / samples] ?? 1
                let (k, a, b) = inputGradientCoefficients(gamma: gc, invStd: invStd[plane], groupDy: Double(gc) * sums.sumDy,
                                                          groupDyXc: Double(gc) * sums.sumDyXc, count: Double(m))
                inputGradient(g, p, output: y, dx + plane * m, count: m, mean: mu, k: k, a: a, b: b)
            }
        }
    }

    /// `1/√(σ² + ε)`, the factor that normalizes a plane.
    @inline(__always)
    static func inverseStandardDeviation(variance: Double, eps: Float) -> Float {
        Float(1 / (variance + Double(eps)).squareRoot())
    }

    /// `k`, `a` and `b` of ``planeNormInputGradient(_:_:output:_:planes:planeSize:mean:k:a:b:)``
    /// for a plane with `σ⁻¹ = invStd` in a group of `count` elements whose sums of
    /// `ĝ = γ_c·g` and `ĝ·(x − μ)` are `groupDy` and `groupDyXc`.
    @inline(__always)
    static func inputGradientCoefficients(gamma: Float, invStd: Float, groupDy: Double, groupDyXc: Double,
                                          count: Double) -> (k: Float, a: Float, b: Float) {
        let s = Double(invStd)
        return (gamma * invStd, Float(s * groupDy / count), Float(s * s * s * groupDyXc / count))
    }
}

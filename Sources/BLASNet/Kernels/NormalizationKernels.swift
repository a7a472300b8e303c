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
    /// channels `g·C/G ..< (g+1)·C/G` of sample `n` (two passes, so the variance does not
    /// lose digits to cancellation).
    static func groupMoments(_ x: UnsafePointer<Float>, channels: Int, samples: Int, planeSize: Int, groups: Int,
                             mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>) {
        let perGroup = channels / groups, count = Double(perGroup * planeSize)
        // Consecutive channels of one sample lie a channel's N planes apart.
        let channelStride = samples * planeSize
        parallelFor(groups * samples) { range in
            for s in range {
                let first = x + ((s / samples) * perGroup * samples + s % samples) * planeSize
                var total = 0.0
                for j in 0..<perGroup { total += sum(first + j * channelStride, count: planeSize) }
                let mu = total / count, muf = Float(mu), muLanes = Lanes(repeating: muf)
                // Σ(x − μ)² around the Float32-rounded mean, corrected by the rounding offset.
                let offset = Double(muf) - mu
                var squares = 0.0
                for j in 0..<perGroup {
                    let p = first + j * channelStride
                    squares += blockedSum(planeSize, lanes: { let d = load(p + $0) - muLanes; return d * d },
                                          scalar: { let d = p[$0] - muf; return d * d })
                }
                mean[s] = mu
                variance[s] = max(0, squares / count - offset * offset)
            }
        }
    }

    /// `y = x·scale[p] + shift[p]` per plane, clamped at zero when `relu`.
    static func planeAffine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, planes: Int, planeSize m: Int,
                            scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, relu: Bool) {
        parallelFor(planes) { range in
            for plane in range {
                let a = scale[plane], b = shift[plane]
                let src = x + plane * m, dst = y + plane * m
                if relu {
                    for i in 0..<m { dst[i] = max(src[i] * a + b, 0) }
                } else {
                    for i in 0..<m { dst[i] = src[i] * a + b }
                }
            }
        }
    }

    /// Sums `Σ g` and `Σ g·(x − mean)` of each plane, where `g = dy`, or `dy` masked
    /// by `output > 0` when a fused ReLU produced `output`.
    static func planeGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                  planes: Int, planeSize m: Int, mean: UnsafePointer<Double>,
                                  sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        parallelFor(planes) { range in
            for plane in range {
                let g = dy + plane * m, p = x + plane * m
                let mu = Float(mean[plane]), muLanes = Lanes(repeating: mu)
                if let output {
                    let y = output + plane * m
                    @inline(__always) func masked(_ i: Int) -> Lanes {
                        load(g + i).replacing(with: 0, where: load(y + i) .<= 0)
                    }
                    sumDy[plane] = blockedSum(m, lanes: masked, scalar: { reluMasked(g, y, $0) })
                    sumDyXc[plane] = blockedSum(m, lanes: { masked($0) * (load(p + $0) - muLanes) },
                                            scalar: { reluMasked(g, y, $0) * (p[$0] - mu) })
                } else {
                    sumDy[plane] = blockedSum(m, lanes: { load(g + $0) }, scalar: { g[$0] })
                    sumDyXc[plane] = blockedSum(m, lanes: { load(g + $0) * (load(p + $0) - muLanes) },
                                            scalar: { g[$0] * (p[$0] - mu) })
                }
            }
        }
    }

    /// The input gradient of a normalization: `dx = k·g − a − (x − mean)·b` per plane,
    /// with `g` as in ``planeGradientSums(_:_:output:planes:planeSize:mean:sumDy:sumDyXc:)``.
    static func planeNormInputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                       _ dx: UnsafeMutablePointer<Float>, planes: Int, planeSize m: Int,
                                       mean: UnsafePointer<Double>, k: UnsafePointer<Float>,
                                       a: UnsafePointer<Float>, b: UnsafePointer<Float>) {
        parallelFor(planes) { range in
            for plane in range {
                let g = dy + plane * m, p = x + plane * m, out = dx + plane * m
                let mu = Float(mean[plane]), kc = k[plane], ac = a[plane], bc = b[plane]
                if let output {
                    let y = output + plane * m
                    for i in 0..<m { out[i] = kc * reluMasked(g, y, i) - ac - (p[i] - mu) * bc }
                } else {
                    for i in 0..<m { out[i] = kc * g[i] - ac - (p[i] - mu) * bc }
                }
            }
        }
    }
}

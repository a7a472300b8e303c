import Foundation

/// Per-channel kernels over channel-major data: channel `c` owns the contiguous
/// block `x[c·m ..< (c+1)·m]` with `m = N·H·W`. Channels are split over the workers.
///
/// Sums use ``Kernels/blockedSum(_:lanes:scalar:)``: eight Float32 lanes, Float64 block totals.
///
/// A normalization followed by a ReLU runs fused: the forward clamps as it writes, and
/// the backward reads the clamped output `y` as the mask instead of materializing
/// the masked gradient.
extension Kernels {
    /// Mean and biased variance of each channel (two passes, so the variance does not
    /// lose digits to cancellation).
    static func channelMoments(_ x: UnsafePointer<Float>, channels: Int, m: Int,
                               mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>) {
        parallelFor(channels) { range in
            for c in range {
                let p = x + c * m
                let mu = blockedSum(m, lanes: { load(p + $0) }, scalar: { p[$0] }) / Double(m)
                let muf = Float(mu)
                // Σ(x − μ)² around the Float32-rounded mean, corrected by the rounding offset.
                let offset = Double(muf) - mu
                let squares = blockedSum(m, lanes: { let d = load(p + $0) - Lanes(repeating: muf); return d * d },
                                         scalar: { let d = p[$0] - muf; return d * d })
                mean[c] = mu
                variance[c] = max(0, squares / Double(m) - offset * offset)
            }
        }
    }

    /// `y = x·scale[c] + shift[c]` per channel, clamped at zero when `relu`.
    static func channelAffine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, channels: Int, m: Int,
                              scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, relu: Bool) {
        parallelFor(channels) { range in
            for c in range {
                let a = scale[c], b = shift[c]
                let src = x + c * m, dst = y + c * m
                if relu {
                    for i in 0..<m { dst[i] = max(src[i] * a + b, 0) }
                } else {
                    for i in 0..<m { dst[i] = src[i] * a + b }
                }
            }
        }
    }

    /// Sums `Σ g` and `Σ g·(x − mean)` of each channel, where `g = dy`, or `dy` masked
    /// by `output > 0` when a fused ReLU produced `output`.
    static func channelGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                    channels: Int, m: Int, mean: UnsafePointer<Double>,
                                    sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        parallelFor(channels) { range in
            for c in range {
                let g = dy + c * m, p = x + c * m
                let mu = Float(mean[c]), muLanes = Lanes(repeating: mu)
                if let output {
                    let y = output + c * m
                    @inline(__always) func masked(_ i: Int) -> Lanes {
                        load(g + i).replacing(with: 0, where: load(y + i) .<= 0)
                    }
                    sumDy[c] = blockedSum(m, lanes: masked, scalar: { reluMasked(g, y, $0) })
                    sumDyXc[c] = blockedSum(m, lanes: { masked($0) * (load(p + $0) - muLanes) },
                                            scalar: { reluMasked(g, y, $0) * (p[$0] - mu) })
                } else {
                    sumDy[c] = blockedSum(m, lanes: { load(g + $0) }, scalar: { g[$0] })
                    sumDyXc[c] = blockedSum(m, lanes: { load(g + $0) * (load(p + $0) - muLanes) },
                                            scalar: { g[$0] * (p[$0] - mu) })
                }
            }
        }
    }

    /// The input gradient of a normalization: `dx = k·(g − a − (x − mean)·b)` per channel,
    /// with `g` as in ``channelGradientSums(_:_:output:channels:m:mean:sumDy:sumDyXc:)``.
    static func channelNormInputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                         _ dx: UnsafeMutablePointer<Float>, channels: Int, m: Int,
                                         mean: UnsafePointer<Double>, k: UnsafePointer<Float>,
                                         a: UnsafePointer<Float>, b: UnsafePointer<Float>) {
        parallelFor(channels) { range in
            for c in range {
                let g = dy + c * m, p = x + c * m, out = dx + c * m
                let mu = Float(mean[c]), kc = k[c], ac = a[c], bc = b[c]
                if let output {
                    let y = output + c * m
                    for i in 0..<m { out[i] = kc * (reluMasked(g, y, i) - ac - (p[i] - mu) * bc) }
                } else {
                    for i in 0..<m { out[i] = kc * (g[i] - ac - (p[i] - mu) * bc) }
                }
            }
        }
    }
}

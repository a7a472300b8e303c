import Foundation

/// Per-channel kernels over channel-major data: channel `c` owns the contiguous
/// block `x[c·m ..< (c+1)·m]` with `m = N·H·W`. Channels are split over the workers.
///
/// A normalization followed by a ReLU runs fused: the forward clamps as it writes, and
/// the backward reads the clamped output `y` as the mask instead of materializing
/// the masked gradient.
extension Kernels {
    /// Mean and biased variance of each channel, accumulated in Float64 (two passes,
    /// so the variance does not lose digits to cancellation).
    static func channelMoments(_ x: UnsafePointer<Float>, channels: Int, m: Int,
                               mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>) {
        parallelFor(channels) { range in
            for c in range {
                let p = x + c * m
                var sum = 0.0
                for i in 0..<m { sum += Double(p[i]) }
                let mu = sum / Double(m)
                var squares = 0.0
                for i in 0..<m {
                    let d = Double(p[i]) - mu
                    squares += d * d
                }
                mean[c] = mu
                variance[c] = squares / Double(m)
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

    /// Sums `Σ g` and `Σ g·(x − mean)` of each channel in Float64, where `g = dy`, or
    /// `dy` masked by `output > 0` when a fused ReLU produced `output`.
    static func channelGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, output: UnsafePointer<Float>?,
                                    channels: Int, m: Int, mean: UnsafePointer<Double>,
                                    sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        parallelFor(channels) { range in
            for c in range {
                let g = dy + c * m, p = x + c * m
                let mu = Float(mean[c])
                var s = 0.0, sx = 0.0
                if let output {
                    let y = output + c * m
                    for i in 0..<m where y[i] > 0 {
                        s += Double(g[i])
                        sx += Double(g[i] * (p[i] - mu))
                    }
                } else {
                    for i in 0..<m {
                        s += Double(g[i])
                        sx += Double(g[i] * (p[i] - mu))
                    }
                }
                sumDy[c] = s
                sumDyXc[c] = sx
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
                    for i in 0..<m { out[i] = kc * ((y[i] > 0 ? g[i] : 0) - ac - (p[i] - mu) * bc) }
                } else {
                    for i in 0..<m { out[i] = kc * (g[i] - ac - (p[i] - mu) * bc) }
                }
            }
        }
    }
}

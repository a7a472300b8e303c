import Foundation

/// Per-channel kernels over channel-major data: channel `c` owns the contiguous
/// block `x[c·m ..< (c+1)·m]` with `m = N·H·W`.
extension Kernels {
    /// Mean and biased variance of each channel, accumulated in Float64 (two passes,
    /// so the variance does not lose digits to cancellation).
    static func channelMoments(_ x: UnsafePointer<Float>, channels: Int, m: Int,
                               mean: UnsafeMutablePointer<Double>, variance: UnsafeMutablePointer<Double>) {
        for c in 0..<channels {
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

    /// `y = x·scale[c] + shift[c]` per channel.
    static func channelAffine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, channels: Int, m: Int,
                              scale: UnsafePointer<Float>, shift: UnsafePointer<Float>) {
        for c in 0..<channels {
            let a = scale[c], b = shift[c]
            let src = x + c * m, dst = y + c * m
            for i in 0..<m { dst[i] = src[i] * a + b }
        }
    }

    /// Sums `Σ dy` and `Σ dy·(x − mean)` of each channel, in Float64.
    static func channelGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, channels: Int, m: Int,
                                    mean: UnsafePointer<Double>,
                                    sumDy: UnsafeMutablePointer<Double>, sumDyXc: UnsafeMutablePointer<Double>) {
        for c in 0..<channels {
            let g = dy + c * m, p = x + c * m
            let mu = Float(mean[c])
            var s = 0.0, sx = 0.0
            for i in 0..<m {
                s += Double(g[i])
                sx += Double(g[i] * (p[i] - mu))
            }
            sumDy[c] = s
            sumDyXc[c] = sx
        }
    }

    /// The input gradient of a batch-statistics normalization:
    /// `dx = k·(dy − a − (x − mean)·b)` per channel.
    static func channelBatchNormInputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                                              _ dx: UnsafeMutablePointer<Float>, channels: Int, m: Int,
                                              mean: UnsafePointer<Double>, k: UnsafePointer<Float>,
                                              a: UnsafePointer<Float>, b: UnsafePointer<Float>) {
        for c in 0..<channels {
            let g = dy + c * m, p = x + c * m, out = dx + c * m
            let mu = Float(mean[c]), kc = k[c], ac = a[c], bc = b[c]
            for i in 0..<m { out[i] = kc * (g[i] - ac - (p[i] - mu) * bc) }
        }
    }
}

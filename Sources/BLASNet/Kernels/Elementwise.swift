import Foundation

/// Element-wise and per-row kernels, split over the workers in contiguous ranges.
extension Kernels {
    /// Below this many elements a second worker costs more than it saves.
    static let elementGrain = 16384

    static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (x, y)) { r, captures in
            let (x, y) = captures
            for i in r { y[i] = max(x[i], 0) }
        }
    }

    /// Gradient through a ReLU given its *output* (PyTorch's threshold_backward).
    static func reluBackward(_ dy: UnsafePointer<Float>, output: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (dy, output, dx)) { r, captures in
            let (dy, output, dx) = captures
            for i in r { dx[i] = reluMasked(dy, output, i) }
        }
    }

    /// 0 where the ReLU output `y[i]` is at most 0, else `g[i]`: a NaN output passes its
    /// gradient, as in PyTorch. Loading `g[i]` before the comparison lets the compiler
    /// vectorize the select; reading `g` conditionally keeps loops scalar and branchy
    /// (26× slower, measured).
    @inline(__always)
    static func reluMasked(_ g: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ i: Int) -> Float {
        let gi = g[i]
        return y[i] <= 0 ? 0 : gi
    }

    /// `y = max(y + x, 0)` in place: a residual addition and the ReLU after it, in one pass.
    static func addReLU(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (x, y)) { r, captures in
            let (x, y) = captures
            for i in r { y[i] = max(y[i] + x[i], 0) }
        }
    }

    static func sigmoid(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (x, y)) { r, captures in
            let (x, y) = captures
            for i in r { y[i] = 1 / (1 + exp(-x[i])) }
        }
    }

    /// Gradient through a sigmoid given its output `s`: `dy·s·(1 − s)`.
    static func sigmoidBackward(_ dy: UnsafePointer<Float>, output: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (dy, output, dx)) { r, captures in
            let (dy, output, dx) = captures
            for i in r { dx[i] = dy[i] * output[i] * (1 - output[i]) }
        }
    }

    /// `y[i] = 0`.
    static func zero(_ y: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, y) { r, y in (y + r.lowerBound).update(repeating: 0, count: r.count) }
    }

    /// `y[i] += x[i]`.
    static func accumulate(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        parallelFor(count, grain: elementGrain, (x, y)) { r, captures in
            let (x, y) = captures
            for i in r { y[i] += x[i] }
        }
    }

    /// `b[r] += Σ_j m[r, j]` for a `rows × columns` row-major matrix.
    static func accumulateRowSums(_ m: UnsafePointer<Float>, into b: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        parallelFor(rows, grain: max(1, elementGrain / max(columns, 1)), (m, b, columns)) { range, captures in
            let (m, b, columns) = captures
            for r in range {
                b[r] += Float(sum(m + r * columns, count: columns))
            }
        }
    }

    /// `m[r, j] += b[r]` for a `rows × columns` row-major matrix.
    static func addRowBias(_ b: UnsafePointer<Float>, to m: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        parallelFor(rows, grain: max(1, elementGrain / max(columns, 1)), (b, m, columns)) { range, captures in
            let (b, m, columns) = captures
            for r in range {
                let row = m + r * columns, v = b[r]
                for j in 0..<columns { row[j] += v }
            }
        }
    }

    /// `y[p, i] = x[p, i]·s[p]`: each plane scaled by its own factor.
    static func scalePlanes(_ x: UnsafePointer<Float>, by s: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, planes: Int, planeSize: Int) {
        parallelFor(planes, grain: max(1, elementGrain / max(planeSize, 1)), (x, s, y, planeSize)) { range, captures in
            let (x, s, y, planeSize) = captures
            for p in range {
                let src = x + p * planeSize, dst = y + p * planeSize, f = s[p]
                for i in 0..<planeSize { dst[i] = src[i] * f }
            }
        }
    }

    /// `d[p] = Σ_i a[p, i]·b[p, i]`: the dot product of each pair of planes.
    static func planeDots(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, planes: Int, planeSize: Int) {
        parallelFor(planes, grain: max(1, elementGrain / max(planeSize, 1)), (a, b, d, planeSize)) { range, captures in
            let (a, b, d, planeSize) = captures
            for p in range {
                d[p] = Float(dot(a + p * planeSize, b + p * planeSize, count: planeSize))
            }
        }
    }
}

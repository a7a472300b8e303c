extension Kernels {
    /// `dst[j, i, :] = src[i, j, :]` for `src` of shape `[a, b, inner]`.
    static func swapOuterAxes(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, a: Int, b: Int, inner: Int) {
        for i in 0..<a {
            for j in 0..<b {
                (dst + (j * a + i) * inner).update(from: src + (i * b + j) * inner, count: inner)
            }
        }
    }
}

extension Kernels {
    /// `dst[a, c, b] = src[a, b, c]` for `src` of shape `[outer, rows, columns]`.
    static func transposeInner(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, outer: Int, rows: Int, columns: Int) {
        for a in 0..<outer {
            let s = src + a * rows * columns, d = dst + a * rows * columns
            for r in 0..<rows {
                for c in 0..<columns { d[c * rows + r] = s[r * columns + c] }
            }
        }
    }
}

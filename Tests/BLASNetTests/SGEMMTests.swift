import Testing
@testable import BLASNet

/// `BLAS.sgemm` splits large products over the workers itself (by columns of C, or by rows
/// when C is tall); over three workers (uneven blocks), every transposition, leading
/// dimensions wider than the matrices and a nonzero beta must give what a Float64 triple
/// loop gives.
struct SGEMMTests {
    @Test(arguments: [(m: 40, n: 700, k: 90), (m: 700, n: 40, k: 90), (m: 5, n: 7, k: 3)],
          [(false, false), (true, false), (false, true), (true, true)])
    func splitProductMatchesReference(_ size: (m: Int, n: Int, k: Int), _ transposed: (a: Bool, b: Bool)) {
        let (m, n, k) = size, (transA, transB) = transposed
        // Stored shapes, with three spare columns in every row.
        let (aRows, aColumns) = transA ? (k, m) : (m, k), (bRows, bColumns) = transB ? (n, k) : (k, n)
        let (lda, ldb, ldc) = (aColumns + 3, bColumns + 3, n + 3)
        let a = GradientCheck.random([aRows * lda], seed: 1).scalars
        let b = GradientCheck.random([bRows * ldb], seed: 2).scalars
        var c = GradientCheck.random([m * ldc], seed: 3).scalars
        let c0 = c
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    BLAS.splitSGEMM(.init(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, beta: 2),
                                    workers: 3, alpha: 0.5, a: a.baseAddress!, b: b.baseAddress!, c: c.baseAddress!)
                }
            }
        }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p], y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(x) * Double(y)
                }
                worst = nanMax(worst, abs(Double(c[i * ldc + j]) - (0.5 * sum + 2 * Double(c0[i * ldc + j]))))
            }
            // The spare columns of C stay untouched.
            #expect(c[(i * ldc + n)..<(i * ldc + ldc)] == c0[(i * ldc + n)..<(i * ldc + ldc)])
        }
        #expect(worst < 1e-4, "largest difference \(worst)")
    }
}

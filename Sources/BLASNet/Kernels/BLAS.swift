import COpenBLAS

/// Thin, labelled wrappers over the CBLAS and LAPACKE calls BLASNet uses, so that
/// CBLAS enums and argument order stay inside this file.
public enum BLAS {
    /// `C = alpha * op(A) * op(B) + beta * C` on row-major matrices.
    ///
    /// `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`; leading dimensions are
    /// the row strides of the matrices as stored (before transposition).
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        Profiler.recordGEMM(.init(transA: transA, transB: transB, m: m, n: n, k: k))
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k),
            alpha, a, blasint(lda), b, blasint(ldb),
            beta, c, blasint(ldc))
    }

    /// Number of threads OpenBLAS uses for each call; BLASNet's own kernels use as many.
    /// Set it once, before training: it is read on every kernel call.
    /// Adds one batch to least-squares normal equations: `gram += Xᵀ·X` (upper triangle)
    /// and `rhs += Xᵀ·Y`, with `X: [rows, n]` and `Y: [rows, k]` row-major Float64.
    static func accumulateNormalEquations(_ x: [Double], _ y: [Double], rows: Int, n: Int, k: Int,
                                          gram: inout [Double], rhs: inout [Double]) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(rows), 1, x, Int32(n), 1, &gram, Int32(n))
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(k), Int32(rows), 1, x, Int32(n),
                    y, Int32(k), 1, &rhs, Int32(k))
    }

    /// `A·B` of row-major Float64 `A: [m, k]` and `B: [k, n]`.
    static func multiply(_ a: [Double], _ b: [Double], m: Int, n: Int, k: Int) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                    b, Int32(n), 0, &c, Int32(n))
        return c
    }

    /// Solves `A·X = B` for symmetric positive-definite `A: [n, n]` and `B: [n, nrhs]`
    /// (row-major, Float64) by Cholesky factorization (LAPACKE_dposv); `B` receives `X`.
    /// Throws if `A` is not positive definite.
    static func solvePositiveDefinite(_ a: inout [Double], _ b: inout [Double], n: Int, nrhs: Int) throws {
        let info = LAPACKE_dposv(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), Int32(nrhs),
                                 &a, Int32(n), &b, Int32(nrhs))
        guard info == 0 else {
            throw BLASNetError.invalidArgument("LAPACKE_dposv: the \(n)×\(n) system is not positive definite (info \(info))")
        }
    }

    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set {
            openblas_set_num_threads(Int32(max(1, newValue)))
            cachedThreads = Int(openblas_get_num_threads())
        }
    }

    /// `threads`, without a call into OpenBLAS on every kernel.
    nonisolated(unsafe) static var cachedThreads = Int(openblas_get_num_threads())

    /// The kernel family OpenBLAS selected for this CPU (for example `Cooperlake`).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The OpenBLAS build configuration string (version, threading, architecture).
    public static var configuration: String {
        guard let config = openblas_get_config() else { return "unknown" }
        return String(cString: config)
    }
}

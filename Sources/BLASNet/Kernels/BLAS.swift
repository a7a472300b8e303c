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

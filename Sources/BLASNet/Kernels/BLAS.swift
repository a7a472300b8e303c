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
        sgemm(Profiler.GEMMShape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, beta: beta),
              alpha: alpha, a: a, b: b, c: c)
    }

    /// The sgemm `shape` describes, recorded for the profiler and split over the workers.
    static func sgemm(_ shape: Profiler.GEMMShape, alpha: Float = 1, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                      c: UnsafeMutablePointer<Float>) {
        guard shape.m > 0, shape.n > 0 else { return }
        Profiler.recordGEMM(shape)
        // Below about a million multiply-adds, waking a second worker costs more than it saves.
        let workers = min(cachedThreads, shape.m * shape.n * shape.k >= 1 << 20 ? max(shape.m, shape.n) / 16 : 1)
        splitSGEMM(shape, workers: workers, alpha: alpha, a: a, b: b, c: c)
    }

    /// `sgemm` over `workers` threads: each takes a block of C's columns (or rows, when C
    /// is tall), on single-threaded OpenBLAS. Blocks are multiples of 16 so the kernels'
    /// register tiles stay whole.
    static func splitSGEMM(_ shape: Profiler.GEMMShape, workers: Int, alpha: Float, a: UnsafePointer<Float>,
                           b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        guard workers > 1 else { return serialSGEMM(shape, alpha: alpha, a: a, b: b, c: c) }
        let (m, n) = (shape.m, shape.n)
        let splitsColumns = n >= m, extent = splitsColumns ? n : m
        let block = (extent + workers * 16 - 1) / (workers * 16) * 16
        Kernels.parallelFor(workers, workers: workers, (shape, alpha, a, b, c, splitsColumns, extent, block)) { parts, captures in
            let (shape, alpha, a, b, c, splitsColumns, extent, block) = captures
            let (transA, transB) = (shape.transA, shape.transB)
            let (lda, ldb, ldc) = (shape.lda, shape.ldb, shape.ldc)
            for part in parts {
                let lo = part * block, hi = min(extent, lo + block)
                guard lo < hi else { continue }
                var piece = shape
                if splitsColumns {
                    piece.n = hi - lo
                    serialSGEMM(piece, alpha: alpha, a: a, b: b + (transB ? lo * ldb : lo), c: c + lo)
                } else {
                    piece.m = hi - lo
                    serialSGEMM(piece, alpha: alpha, a: a + (transA ? lo : lo * lda), b: b, c: c + lo * ldc)
                }
            }
        }
    }

    /// `count` independent sgemms of one shape, spread over the workers, each whole on
    /// single-threaded OpenBLAS: `gemms(range, captures)` issues those of `range` with
    /// ``serialSGEMM``. For many small products this beats splitting each one, where both
    /// workers would pack the same small panels.
    ///
    /// `gemms` takes a range, not one index, so that it goes to
    /// ``Kernels/parallelFor(_:grain:workers:_:_:)`` as it is: a capture-free body there
    /// that called a per-index closure would have to capture it.
    static func sgemmBatch<Captures>(_ shape: Profiler.GEMMShape, count: Int, _ captures: Captures,
                                     _ gemms: @escaping (Range<Int>, Captures) -> Void) {
        Profiler.recordGEMM(shape, count: count)
        Kernels.parallelFor(count, captures, gemms)
    }

    /// One sgemm on the calling thread: OpenBLAS itself always runs single-threaded.
    static func serialSGEMM(_ s: Profiler.GEMMShape, alpha: Float = 1, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                            c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(
            CblasRowMajor,
            s.transA ? CblasTrans : CblasNoTrans,
            s.transB ? CblasTrans : CblasNoTrans,
            blasint(s.m), blasint(s.n), blasint(s.k),
            // A stride of 0 (an empty batch's matrix) is "an illegal value" to BLAS, which
            // prints so on stderr even though no element of that matrix is read.
            alpha, a, blasint(max(1, s.lda)), b, blasint(max(1, s.ldb)),
            s.beta, c, blasint(max(1, s.ldc)))
    }

    /// Adds one batch to least-squares normal equations: `gram += Xᵀ·X` (upper triangle)
    /// and `rhs += Xᵀ·Y`, with `X: [rows, n]` and `Y: [rows, k]` row-major Float64.
    static func accumulateNormalEquations(_ x: [Double], _ y: [Double], rows: Int, n: Int, k: Int,
                                          gram: inout [Double], rhs: inout [Double]) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(rows), 1, x, Int32(n), 1, &gram, Int32(n))
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(k), Int32(rows), 1, x, Int32(n),
                    y, Int32(k), 1, &rhs, Int32(k))
    }

    /// `[X 1]` in Float64, row-major `[rows, features + 1]`, from Float32 `X: [rows, features]`.
    static func augmentedRows(_ x: UnsafePointer<Float>, rows: Int, features f: Int) -> [Double] {
        let n = f + 1
        return [Double](unsafeUninitializedCapacity: rows * n) { out, initialized in
            let o = out.baseAddress!
            for r in 0..<rows {
                for j in 0..<f { o[r * n + j] = Double(x[r * f + j]) }
                o[r * n + f] = 1
            }
            initialized = rows * n
        }
    }

    /// Copies the upper triangle of row-major `a: [n, n]` into its lower one (dsyrk fills
    /// the upper alone; the ridge head reads the Gram matrix's last row, the feature sums).
    static func mirrorUpperTriangle(_ a: inout [Double], n: Int) {
        a.withUnsafeMutableBufferPointer { buffer in
            let p = buffer.baseAddress!
            for i in 0..<n { for j in 0..<i { p[i * n + j] = p[j * n + i] } }
        }
    }

    /// `A·B` of row-major Float64 `A: [m, k]` and `B: [k, n]`, either given transposed
    /// (`[k, m]`, `[n, k]`) if asked.
    static func multiply(_ a: [Double], _ b: [Double], m: Int, n: Int, k: Int, transposingA: Bool = false,
                         transposingB: Bool = false) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, transposingA ? CblasTrans : CblasNoTrans, transposingB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(transposingA ? m : k), b, Int32(transposingB ? k : n),
                    0, &c, Int32(n))
        return c
    }

    /// The eigenvalues (ascending) and eigenvectors of symmetric row-major Float64
    /// `a: [n, n]` (its upper triangle is read) by LAPACKE_dsyevr, with OpenBLAS on
    /// ``threads`` threads for the call: the O(n³) reduction is BLAS-3 work and nothing else
    /// runs meanwhile. Column `j` of `vectors: [n, n]` belongs to `values[j]`. `a` is overwritten.
    static func symmetricEigen(_ a: inout [Double], n: Int) throws -> (values: [Double], vectors: [Double]) {
        var values = [Double](repeating: 0, count: n), vectors = [Double](repeating: 0, count: n * n)
        var found: Int32 = 0
        var support = [Int32](repeating: 0, count: 2 * max(n, 1))
        openblas_set_num_threads(Int32(threads))
        defer { openblas_set_num_threads(1) }
        let info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "V")), Int8(UInt8(ascii: "A")), Int8(UInt8(ascii: "U")),
                                  Int32(n), &a, Int32(n), 0, 0, 0, 0, 0, &found, &values, &vectors, Int32(n), &support)
        // LAPACKE checks the matrix for NaN first and names it with info −6.
        if info == -6 { throw BLASNetError.invalidArgument("LAPACKE_dsyevr: the \(n)×\(n) matrix holds NaN (from non-finite inputs)") }
        guard info == 0, found == n else {
            throw BLASNetError.invalidArgument("LAPACKE_dsyevr: the eigenvalues of the \(n)×\(n) matrix did not converge (info \(info))")
        }
        return (values, vectors)
    }

    /// Workers for BLASNet's sgemms and kernels. BLASNet splits each large sgemm over
    /// them itself and keeps OpenBLAS single-threaded: OpenBLAS's own workers spin
    /// between calls, taking the cores from the im2col and normalization passes in between.
    public static var threads: Int {
        get { cachedThreads }
        set { cachedThreads = max(1, newValue) }
    }

    /// ``threads``; its first use takes OpenBLAS's own choice and makes OpenBLAS single-threaded.
    nonisolated(unsafe) static var cachedThreads: Int = {
        let chosen = Int(openblas_get_num_threads())
        openblas_set_num_threads(1)
        return chosen
    }()

    /// The kernel family OpenBLAS selected for this CPU (for example `Cooperlake`).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// How the OpenBLAS build threads (`openblas_get_parallel`): sequential, pthreads or
    /// OpenMP. BLASNet calls it single-threaded either way and splits the work itself.
    public static var threading: String {
        switch openblas_get_parallel() {
        case 0: "sequential"
        case 1: "pthreads"
        case 2: "OpenMP"
        case let other: "unknown (\(other))"
        }
    }

    /// The OpenBLAS build configuration string (version, threading, architecture).
    public static var configuration: String {
        guard let config = openblas_get_config() else { return "unknown" }
        return String(cString: config)
    }
}

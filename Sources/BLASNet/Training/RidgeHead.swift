import Foundation

/// The classifier of a frozen network fitted in closed form: ridge-regularized least
/// squares from the pooled features to one-hot targets,
/// `[W b] = argmin ‖[X 1]·[W b]ᵀ − Y‖² + λ'‖W‖²`, solved through the normal equations
/// `([X 1]ᵀ[X 1] + λ'D)·[W b]ᵀ = [X 1]ᵀY` by Cholesky factorization (LAPACKE), where `D`
/// is the identity on the weights and zero on the bias (the bias is not penalized) and
/// `λ' = λ·m·mean‖x‖²` over the `m` images. One pass over the data replaces the epochs of
/// SGD that would train the same head.
public enum RidgeHead {
    /// The λ values generalized cross-validation chooses among: 10⁻⁷ … 10⁻¹, half a decade apart.
    public static let ridgeGrid = stride(from: -7.0, through: -1.0, by: 0.5).map { pow(10, $0) }

    /// The most features a closed-form head takes: its `(f + 1)²` Float64 normal equations,
    /// held about three times over, are 6 GiB at 16,384 (ResNet-50's 2,048 channels over a
    /// 2×2 grid are 8,192; over 8×8, 131,072 would need 400 GB).
    public static let maximumFeatures = 16_384

    /// Fits `model.fc` to the images of `loader` (the model in inference mode; only the
    /// head changes) and returns the λ it used. `ridge` is λ relative to the mean squared
    /// feature norm, so one value suits any width; nil chooses it from ``ridgeGrid`` by
    /// generalized cross-validation (Golub, Heath & Wahba 1979), which estimates the
    /// leave-one-out error from the training features alone.
    @discardableResult
    public static func fit(_ model: ResNet, on loader: DataLoader, ridge: Double? = nil) throws -> Double {
        // λ = 0 leaves [X 1]ᵀ[X 1] singular whenever features outnumber images or a channel is dead.
        if let ridge, !(ridge > 0 && ridge.isFinite) {
            throw BLASNetError.invalidArgument("ridge head: λ must be positive and finite, got \(ridge)")
        }
        let k = model.numClasses, f = model.fc.inFeatures, n = f + 1
        guard f <= maximumFeatures else {
            throw BLASNetError.invalidArgument(
                "ridge head: \(f) features are more than the \(maximumFeatures) its normal equations can hold; pool over a smaller grid")
        }
        model.eval()
        // Gram matrix and right-hand side in Float64: features are summed over thousands of images.
        var gram = [Double](repeating: 0, count: n * n), rhs = [Double](repeating: 0, count: n * k)
        var count = 0
        for batch in loader.batches(epoch: 0) {
            let x = try withoutGradients { try model.features(batch.images) }
            let rows = x.shape[0]
            let augmented = x.withUnsafePointer { BLAS.augmentedRows($0, rows: rows, features: f) }
            var targets = [Double](repeating: 0, count: rows * k)
            for (r, label) in batch.labels.enumerated() {
                guard (0..<k).contains(label) else {
                    throw BLASNetError.invalidArgument("RidgeHead: label \(label) outside the head's \(k) classes")
                }
                targets[r * k + label] = 1
            }
            BLAS.accumulateNormalEquations(augmented, targets, rows: rows, n: n, k: k, gram: &gram, rhs: &rhs)
            count += rows
        }
        guard count > 0 else { throw BLASNetError.invalidArgument("RidgeHead: the loader has no images") }
        BLAS.mirrorUpperTriangle(&gram, n: n)
        let normalEquations = NormalEquations(gram: gram, rhs: rhs, n: n, k: k, count: count)
        let chosen = try ridge ?? zip(ridgeGrid, ridgeGrid.map(normalEquations.gcv)).min { $0.1 < $1.1 }!.0
        let solution = try normalEquations.solve(ridge: chosen, withHat: false).weights
        var weight = [Float](repeating: 0, count: k * f), bias = [Float](repeating: 0, count: k)
        for c in 0..<k {
            for j in 0..<f { weight[c * f + j] = Float(solution[j * k + c]) }
            bias[c] = Float(solution[f * k + c])
        }
        try model.fc.weight.assign(Tensor(shape: [k, f], scalars: weight))
        try model.fc.bias?.assign(Tensor(shape: [k], scalars: bias))
        return chosen
    }

    /// `G = [X 1]ᵀ[X 1]` (full, symmetric) and `B = [X 1]ᵀY` of `count` one-hot rows.
    struct NormalEquations {
        let gram: [Double], rhs: [Double]
        let n: Int, k: Int, count: Int

        /// `θ = (G + λ'D)⁻¹B` with `D` the identity on the features (the bias is not
        /// penalized) and `λ' = λ·count·mean squared feature norm`; with `withHat` also the
        /// trace of the hat matrix, `tr((G + λ'D)⁻¹G)`, the fit's effective parameters per class.
        func solve(ridge: Double, withHat: Bool) throws -> (weights: [Double], hatTrace: Double) {
            let f = n - 1
            let meanSquaredNorm = (0..<f).reduce(0.0) { $0 + gram[$1 * n + $1] } / Double(count)
            var a = gram
            for j in 0..<f { a[j * n + j] += ridge * meanSquaredNorm * Double(count) }
            let columns = k + (withHat ? n : 0)
            // Row i of `[B G]` (or of `B`).
            var b = [Double](repeating: 0, count: n * columns)
            b.withUnsafeMutableBufferPointer { out in
                rhs.withUnsafeBufferPointer { r in
                    gram.withUnsafeBufferPointer { g in
                        for i in 0..<n {
                            (out.baseAddress! + i * columns).update(from: r.baseAddress! + i * k, count: k)
                            if withHat { (out.baseAddress! + i * columns + k).update(from: g.baseAddress! + i * n, count: n) }
                        }
                    }
                }
            }
            try BLAS.solvePositiveDefinite(&a, &b, n: n, nrhs: columns)
            let weights = (0..<n).flatMap { i in b[(i * columns)..<(i * columns + k)] }
            return (weights, withHat ? (0..<n).reduce(0.0) { $0 + b[$1 * columns + k + $1] } : 0)
        }

        /// The generalized cross-validation score `m·‖Y − Ŷ‖² / (m − tr H)²` of `ridge`,
        /// from the normal equations alone: `‖Y − Ŷ‖² = tr(YᵀY) − 2·tr(θᵀB) + tr(θᵀGθ)`.
        func gcv(_ ridge: Double) throws -> Double {
            let (theta, hatTrace) = try solve(ridge: ridge, withHat: true)
            let gTheta = BLAS.multiply(gram, theta, m: n, n: k, k: n)
            // tr(YᵀY) of one-hot targets is the row count.
            let residual = (0..<(n * k)).reduce(Double(count)) { $0 + theta[$1] * (gTheta[$1] - 2 * rhs[$1]) }
            let m = Double(count)
            return m * max(residual, 0) / ((m - hatTrace) * (m - hatTrace))
        }
    }
}

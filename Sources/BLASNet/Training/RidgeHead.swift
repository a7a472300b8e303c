import Foundation

/// The classifier of a frozen network fitted in closed form: ridge-regularized least
/// squares from the pooled features to one-hot targets,
/// `[W b] = argmin ‖[X 1]·[W b]ᵀ − Y‖² + λ'‖W‖²`, the solution of the normal equations
/// `([X 1]ᵀ[X 1] + λ'D)·[W b]ᵀ = [X 1]ᵀY`, where `D` is the identity on the weights and
/// zero on the bias (the bias is not penalized) and `λ' = λ·m·mean‖x‖²` over the `m`
/// images; they are solved through one eigendecomposition (LAPACKE) for every λ tried.
/// One pass over the data replaces the epochs of SGD that would train the same head.
public enum RidgeHead {
    /// The λ values generalized cross-validation chooses among: 10⁻⁷ … 10⁻¹, half a decade apart.
    public static let ridgeGrid = stride(from: -7.0, through: -1.0, by: 0.5).map { pow(10, $0) }

    /// The most features a closed-form head takes: its `(f + 1)²` Float64 normal equations,
    /// held three times over with their eigenvectors, are 6 GiB at 16,384 (ResNet-50's 2,048 channels over a
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
        let normalEquations = try NormalEquations(gram: consume gram, rhs: rhs, n: n, k: k, count: count)
        let chosen = ridge ?? zip(ridgeGrid, ridgeGrid.map(normalEquations.gcv)).min { $0.1 < $1.1 }!.0
        let solution = normalEquations.solve(ridge: chosen)
        var weight = [Float](repeating: 0, count: k * f), bias = [Float](repeating: 0, count: k)
        for c in 0..<k {
            for j in 0..<f { weight[c * f + j] = Float(solution[j * k + c]) }
            bias[c] = Float(solution[f * k + c])
        }
        try model.fc.weight.assign(Tensor(shape: [k, f], scalars: weight))
        try model.fc.bias?.assign(Tensor(shape: [k], scalars: bias))
        return chosen
    }

    /// The ridge problem of `G = [X 1]ᵀ[X 1]` (full, symmetric) and `B = [X 1]ᵀY` over
    /// `count` one-hot rows, taken apart once so that each λ costs O(f·k) to score and
    /// O(f²·k) to solve, where solving each by Cholesky cost O(f³), thirteen times over
    /// for generalized cross-validation (scikit-learn's `RidgeCV` decomposes once the same way).
    ///
    /// The unpenalized bias makes it the centred problem: with feature and target means `x̄`
    /// and `ȳ`, `W = (Gc + λ'I)⁻¹Bc` and `b = ȳ − Wᵀx̄`, where `Gc = G_XX − m·x̄x̄ᵀ` and
    /// `Bc = B_X − m·x̄ȳᵀ`. With `Gc = QΛQᵀ` and `Z = QᵀBc`, `W = Q·(Λ + λ')⁻¹Z`.
    struct NormalEquations {
        let features: Int, classes: Int, count: Int
        /// `Λ`, ascending, and `Q: [f, f]` (column `j` belongs to `Λ[j]`).
        let eigenvalues: [Double], eigenvectors: [Double]
        /// `Z = QᵀBc: [f, k]`.
        let projectedTargets: [Double]
        let featureMeans: [Double], targetMeans: [Double]
        /// `λ'/λ`: the row count times the mean squared (uncentred) feature norm.
        let penaltyScale: Double

        /// `gram: [n, n]` and `rhs: [n, k]` with `n = f + 1`, the bias last.
        init(gram: [Double], rhs: [Double], n: Int, k: Int, count: Int) throws {
            let f = n - 1, m = Double(count)
            let sums = (0..<f).map { gram[f * n + $0] }, xMeans = sums.map { $0 / m }
            let yMeans = (0..<k).map { rhs[f * k + $0] / m }
            let trace = (0..<f).reduce(0.0) { $0 + gram[$1 * n + $1] }
            // Then no λ makes the problem well posed: the features carry nothing to fit.
            guard trace > 0 else { throw BLASNetError.invalidArgument("ridge head: every feature of the \(count) images is 0") }
            var centred = [Double](repeating: 0, count: f * f)
            for i in 0..<f { for j in i..<f { centred[i * f + j] = gram[i * n + j] - sums[i] * xMeans[j] } }
            let centredTargets = (0..<(f * k)).map { rhs[$0] - sums[$0 / k] * yMeans[$0 % k] }
            let (values, vectors) = try BLAS.symmetricEigen(&centred, n: f)
            // Rounding can leave the smallest of a positive semidefinite matrix's eigenvalues slightly negative.
            eigenvalues = values.map { max($0, 0) }
            eigenvectors = vectors
            projectedTargets = BLAS.multiply(vectors, centredTargets, m: f, n: k, k: f, transposingA: true)
            (featureMeans, targetMeans, penaltyScale) = (xMeans, yMeans, trace)
            (features, classes, self.count) = (f, k, count)
        }

        /// `θ: [f + 1, k]`, the weights' rows and then the bias, for `λ' = ridge · penaltyScale`.
        func solve(ridge: Double) -> [Double] {
            let (f, k) = (features, classes), penalty = ridge * penaltyScale
            let scaled = (0..<(f * k)).map { projectedTargets[$0] / (eigenvalues[$0 / k] + penalty) }
            let weights = BLAS.multiply(eigenvectors, scaled, m: f, n: k, k: f)
            let bias = (0..<k).map { c in (0..<f).reduce(targetMeans[c]) { $0 - featureMeans[$1] * weights[$1 * k + c] } }
            return weights + bias
        }

        /// The generalized cross-validation score `m·‖Y − Ŷ‖² / (m − tr H)²` of `ridge`
        /// (Golub, Heath & Wahba 1979). Per eigenvector, with `d = Λ + λ'`, the fit keeps
        /// `Λ/d` of the targets' projection: `tr H = 1 + Σ Λ/d` (the 1 is the bias) and
        /// `‖Y − Ŷ‖² = tr(YcᵀYc) − Σ z²·(Λ + 2λ')/d²`, where `tr(YcᵀYc) = m − m‖ȳ‖²` for one-hot rows.
        func gcv(_ ridge: Double) -> Double {
            let penalty = ridge * penaltyScale, m = Double(count)
            var residual = m - m * targetMeans.reduce(0) { $0 + $1 * $1 }, hatTrace = 1.0
            for (j, value) in eigenvalues.enumerated() {
                let d = value + penalty
                hatTrace += value / d
                let squares = (0..<classes).reduce(0.0) { $0 + projectedTargets[j * classes + $1] * projectedTargets[j * classes + $1] }
                residual -= squares * (value + 2 * penalty) / (d * d)
            }
            return m * max(residual, 0) / ((m - hatTrace) * (m - hatTrace))
        }
    }
}

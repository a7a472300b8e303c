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
        // Fewer images than features: the m×m problem of the images is the smaller one, and
        // its rows [X 1] take less memory than the Gram matrix.
        let dual = loader.dataset.count < f
        // Gram matrix and right-hand side in Float64: features are summed over thousands of images.
        var gram = [Double](repeating: 0, count: dual ? 0 : n * n), rhs = [Double](repeating: 0, count: dual ? 0 : n * k)
        var rows: [Double] = [], labels: [Double] = []
        var count = 0
        for batch in loader.batches(epoch: 0) {
            let x = try withoutGradients { try model.features(batch.images) }
            let batchRows = x.shape[0]
            let augmented = x.withUnsafePointer { BLAS.augmentedRows($0, rows: batchRows, features: f) }
            var targets = [Double](repeating: 0, count: batchRows * k)
            for (r, label) in batch.labels.enumerated() {
                guard (0..<k).contains(label) else {
                    throw BLASNetError.invalidArgument("RidgeHead: label \(label) outside the head's \(k) classes")
                }
                targets[r * k + label] = 1
            }
            if dual {
                rows += augmented
                labels += targets
            } else {
                BLAS.accumulateNormalEquations(augmented, targets, rows: batchRows, n: n, k: k, gram: &gram, rhs: &rhs)
            }
            count += batchRows
        }
        guard count > 0 else { throw BLASNetError.invalidArgument("RidgeHead: the loader has no images") }
        let equations: any RidgeEquations
        if dual {
            equations = try KernelEquations(rows: rows, targets: labels, n: n, k: k)
        } else {
            BLAS.mirrorUpperTriangle(&gram, n: n)
            equations = try NormalEquations(gram: consume gram, rhs: rhs, n: n, k: k, count: count)
        }
        let chosen = ridge ?? zip(ridgeGrid, ridgeGrid.map(equations.gcv)).min { $0.1 < $1.1 }!.0
        let solution = equations.solve(ridge: chosen)
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
    struct NormalEquations: RidgeEquations {
        let features: Int, classes: Int, count: Int
        /// `Λ`, `Q: [f, f]` and `Z = QᵀBc: [f, k]`.
        let spectrum: Spectrum
        let featureMeans: [Double], targetMeans: [Double]
        let penaltyScale: Double

        /// `gram: [n, n]` and `rhs: [n, k]` with `n = f + 1`, the bias last.
        init(gram: [Double], rhs: [Double], n: Int, k: Int, count: Int) throws {
            let f = n - 1, m = Double(count)
            let sums = (0..<f).map { gram[f * n + $0] }, xMeans = sums.map { $0 / m }
            let yMeans = (0..<k).map { rhs[f * k + $0] / m }
            let trace = try Spectrum.checkedTrace((0..<f).reduce(0.0) { $0 + gram[$1 * n + $1] }, images: count)
            var centred = [Double](repeating: 0, count: f * f)
            for i in 0..<f { for j in i..<f { centred[i * f + j] = gram[i * n + j] - sums[i] * xMeans[j] } }
            let centredTargets = (0..<(f * k)).map { rhs[$0] - sums[$0 / k] * yMeans[$0 % k] }
            spectrum = try Spectrum(decomposing: &centred, order: f, targets: centredTargets, classes: k)
            (featureMeans, targetMeans, penaltyScale) = (xMeans, yMeans, trace)
            (features, classes, self.count) = (f, k, count)
        }

        func solve(ridge: Double) -> [Double] {
            let f = features, scaled = spectrum.scaledTargets(penalty: ridge * penaltyScale)
            return appendingBias(BLAS.multiply(spectrum.vectors, scaled, m: f, n: classes, k: f))
        }

        /// Per eigenvector, with `d = Λ + λ'`, the fit keeps `Λ/d` of the targets' projection:
        /// `tr H = 1 + Σ Λ/d` (the 1 is the bias) and `‖Y − Ŷ‖² = tr(YcᵀYc) − Σ z²·(Λ + 2λ')/d²`,
        /// where `tr(YcᵀYc) = m − m‖ȳ‖²` for one-hot rows.
        func gcv(_ ridge: Double) -> Double {
            let penalty = ridge * penaltyScale, m = Double(count)
            var residual = m - m * targetMeans.reduce(0) { $0 + $1 * $1 }, hatTrace = 1.0
            for (j, value) in spectrum.values.enumerated() {
                let d = value + penalty
                hatTrace += value / d
                residual -= spectrum.squaredTargets(j) * (value + 2 * penalty) / (d * d)
            }
            return score(residual: residual, hatTrace: hatTrace)
        }
    }

    /// The same problem in its dual form, for fewer images than features. With the rows
    /// centred, `K = XcXcᵀ = USUᵀ` (m × m) and `Z = UᵀYc`, `W = Xcᵀ·(K + λ'I)⁻¹Yc =
    /// Xcᵀ·U(S + λ')⁻¹Z`. Per eigenvector the fit leaves `λ'/(s + λ')` of the targets'
    /// projection, so `‖Y − Ŷ‖² = Σ (λ'/(s + λ'))²·z²` and `tr H = 1 + Σ s/(s + λ')`.
    struct KernelEquations: RidgeEquations {
        let features: Int, classes: Int, count: Int
        /// `Xc: [m, f]`.
        let centredRows: [Double]
        /// `S`, `U: [m, m]` and `Z = UᵀYc: [m, k]`.
        let spectrum: Spectrum
        let featureMeans: [Double], targetMeans: [Double]
        let penaltyScale: Double

        /// `rows: [m, n]` of `[X 1]` (the bias last) and one-hot `targets: [m, k]`.
        init(rows: [Double], targets: [Double], n: Int, k: Int) throws {
            let f = n - 1, m = rows.count / n
            let xMeans = (0..<f).map { j in (0..<m).reduce(0.0) { $0 + rows[$1 * n + j] } / Double(m) }
            let yMeans = (0..<k).map { c in (0..<m).reduce(0.0) { $0 + targets[$1 * k + c] } / Double(m) }
            let trace = try Spectrum.checkedTrace(
                (0..<m).reduce(0.0) { sum, r in (0..<f).reduce(sum) { $0 + rows[r * n + $1] * rows[r * n + $1] } }, images: m)
            let centred = (0..<(m * f)).map { rows[$0 / f * n + $0 % f] - xMeans[$0 % f] }
            let centredTargets = (0..<(m * k)).map { targets[$0] - yMeans[$0 % k] }
            var kernel = BLAS.multiply(centred, centred, m: m, n: m, k: f, transposingB: true)
            spectrum = try Spectrum(decomposing: &kernel, order: m, targets: centredTargets, classes: k)
            (centredRows, featureMeans, targetMeans, penaltyScale) = (centred, xMeans, yMeans, trace)
            (features, classes, count) = (f, k, m)
        }

        func solve(ridge: Double) -> [Double] {
            let scaled = spectrum.scaledTargets(penalty: ridge * penaltyScale)
            let dual = BLAS.multiply(spectrum.vectors, scaled, m: count, n: classes, k: count)
            return appendingBias(BLAS.multiply(centredRows, dual, m: features, n: classes, k: count, transposingA: true))
        }

        func gcv(_ ridge: Double) -> Double {
            let penalty = ridge * penaltyScale
            var residual = 0.0, hatTrace = 1.0
            for (i, value) in spectrum.values.enumerated() {
                let kept = penalty / (value + penalty)
                hatTrace += value / (value + penalty)
                residual += kept * kept * spectrum.squaredTargets(i)
            }
            return score(residual: residual, hatTrace: hatTrace)
        }
    }
}

/// The eigendecomposition of a centred, positive semidefinite matrix (the features' Gram
/// matrix or the images' kernel matrix) with the centred targets projected on its eigenvectors.
struct Spectrum {
    /// Eigenvalues, ascending, clamped at 0: rounding can leave the smallest slightly negative.
    let values: [Double]
    /// `[order, order]`, column `i` belonging to `values[i]`.
    let vectors: [Double]
    /// The targets on the eigenvectors, `vectorsᵀ·targets: [order, classes]`.
    let projectedTargets: [Double]
    let classes: Int

    /// Decomposes `matrix: [order, order]` (its upper triangle is read; it is overwritten).
    init(decomposing matrix: inout [Double], order: Int, targets: [Double], classes: Int) throws {
        let (eigenvalues, eigenvectors) = try BLAS.symmetricEigen(&matrix, n: order)
        values = eigenvalues.map { max($0, 0) }
        vectors = eigenvectors
        projectedTargets = BLAS.multiply(eigenvectors, targets, m: order, n: classes, k: order, transposingA: true)
        self.classes = classes
    }

    /// The projected targets, row `i` divided by `values[i] + penalty`.
    func scaledTargets(penalty: Double) -> [Double] {
        projectedTargets.indices.map { projectedTargets[$0] / (values[$0 / classes] + penalty) }
    }

    /// `‖z_i‖²`: row `i` of the projected targets, squared.
    func squaredTargets(_ i: Int) -> Double {
        (0..<classes).reduce(0.0) { $0 + projectedTargets[i * classes + $1] * projectedTargets[i * classes + $1] }
    }

    /// `trace`, the images' summed squared feature norms (the scale of λ), if positive: at 0
    /// no λ makes the problem well posed, the features carrying nothing to fit.
    static func checkedTrace(_ trace: Double, images: Int) throws -> Double {
        guard trace > 0 else { throw BLASNetError.invalidArgument("ridge head: every feature of the \(images) images is 0") }
        return trace
    }
}

/// A ridge problem taken apart once, solved and scored for any λ: in its primal form
/// (``RidgeHead/NormalEquations``) or its dual (``RidgeHead/KernelEquations``).
protocol RidgeEquations {
    var features: Int { get }
    var classes: Int { get }
    var count: Int { get }
    var featureMeans: [Double] { get }
    var targetMeans: [Double] { get }
    /// `θ: [f + 1, k]`, the weights' rows and then the bias, for `λ' = ridge` times the
    /// images' summed squared feature norms.
    func solve(ridge: Double) -> [Double]
    /// The generalized cross-validation score `m·‖Y − Ŷ‖² / (m − tr H)²` of `ridge`
    /// (Golub, Heath & Wahba 1979); `tr H` counts the bias as one parameter.
    func gcv(_ ridge: Double) -> Double
}

extension RidgeEquations {
    /// `weights: [f, k]` followed by the bias that centring implies, `b = ȳ − Wᵀx̄`.
    func appendingBias(_ weights: [Double]) -> [Double] {
        weights + (0..<classes).map { c in (0..<features).reduce(targetMeans[c]) { $0 - featureMeans[$1] * weights[$1 * classes + c] } }
    }

    func score(residual: Double, hatTrace: Double) -> Double {
        let m = Double(count)
        return m * max(residual, 0) / ((m - hatTrace) * (m - hatTrace))
    }
}

import Foundation

/// The classifier of a frozen network fitted in closed form: ridge-regularized least
/// squares from the pooled features to one-hot targets,
/// `[W b] = argmin ‖[X 1]·[W b]ᵀ − Y‖² + λ‖W‖²`, solved through the normal equations
/// `([X 1]ᵀ[X 1] + λI)·[W b]ᵀ = [X 1]ᵀY` by Cholesky factorization (LAPACKE). One pass
/// over the data replaces the epochs of SGD that would train the same head.
public enum RidgeHead {
    /// Fits `model.fc` to the images of `loader` (the model in inference mode; only the
    /// head changes). `ridge` is λ, relative to the mean squared feature norm so one value
    /// suits any width.
    public static func fit(_ model: ResNet, on loader: DataLoader, ridge: Double = 1e-3) throws {
        model.eval()
        let k = model.numClasses, f = model.fc.inFeatures, n = f + 1
        // Gram matrix and right-hand side in Float64: features are summed over thousands of images.
        var gram = [Double](repeating: 0, count: n * n), rhs = [Double](repeating: 0, count: n * k)
        var count = 0
        for batch in loader.batches(epoch: 0) {
            let x = try model.features(batch.images)
            let rows = x.shape[0]
            var augmented = [Double](repeating: 1, count: rows * n)
            x.withUnsafePointer { p in
                for r in 0..<rows { for j in 0..<f { augmented[r * n + j] = Double(p[r * f + j]) } }
            }
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
        let meanSquaredNorm = (0..<f).reduce(0.0) { $0 + gram[$1 * n + $1] } / Double(count)
        for j in 0..<f { gram[j * n + j] += ridge * meanSquaredNorm * Double(count) }
        try BLAS.solvePositiveDefinite(&gram, &rhs, n: n, nrhs: k)
        var weight = [Float](repeating: 0, count: k * f), bias = [Float](repeating: 0, count: k)
        for c in 0..<k {
            for j in 0..<f { weight[c * f + j] = Float(rhs[j * k + c]) }
            bias[c] = Float(rhs[f * k + c])
        }
        model.fc.weight.value = try Tensor(shape: [k, f], scalars: weight)
        model.fc.bias?.value = try Tensor(shape: [k], scalars: bias)
    }
}

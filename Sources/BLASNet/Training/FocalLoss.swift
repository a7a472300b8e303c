/// Softmax focal loss (Lin et al., 2017), averaged over the batch: each sample's loss is
/// `−α_t·(1 − p_t)^γ·log p_t`, where `p_t` is the softmax probability of its target class
/// and `α_t` the weight of that class. `(1 − p_t)^γ` down-weights the samples the model
/// already gets right; γ = 0 and α = 1 give cross-entropy.
///
/// The gradient with respect to logit `j` of a sample is `F·(p_j − [j = t])/N` with
/// `F = α_t·((1 − p_t)^γ − γ·p_t·(1 − p_t)^(γ−1)·log p_t)`: `log p_t` has derivative
/// `[j = t] − p_j`, and `(1 − p_t)^γ` depends on it through `p_t = exp(log p_t)`.
/// Computed in Float64 from the log-softmax, like ``CrossEntropyLoss``.
///
/// `logits: [N, K], targets: [N] -> loss: scalar, gradient: [N, K]`
public struct FocalLoss: Loss, Sendable {
    /// The class weights α.
    public enum Alpha: Sendable, Equatable {
        /// The same weight for every class.
        case uniform(Float)
        /// One weight per class, `[K]`.
        case perClass([Float])
    }

    /// The focusing exponent γ ≥ 0.
    public let gamma: Float
    public let alpha: Alpha

    /// Throws unless γ and every α are finite and non-negative.
    ///
    /// α defaults to 1, as in the multi-class focal losses of segmentation_models_pytorch
    /// (`alpha=None`): the paper's 0.25 weighs positives against negatives in its sigmoid
    /// form, while here one α for every class only scales the loss, and with it the step
    /// size. Per-class weights are what balance classes.
    public init(gamma: Float = 2, alpha: Alpha = .uniform(1)) throws {
        guard gamma >= 0, gamma.isFinite else {
            throw BLASNetError.invalidArgument("FocalLoss: gamma \(gamma) must be finite and non-negative")
        }
        let weights: [Float] = switch alpha {
        case let .uniform(a): [a]
        case let .perClass(a): a
        }
        guard !weights.isEmpty, weights.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw BLASNetError.invalidArgument("FocalLoss: alpha \(weights) must be finite and non-negative")
        }
        self.gamma = gamma
        self.alpha = alpha
    }

    /// The mean loss and its gradient with respect to the logits.
    public func callAsFunction(_ logits: Tensor, targets: [Int]) throws -> (loss: Float, gradient: Tensor) {
        let (n, k) = try checkedShape(logits, targets: targets)
        let classWeights: [Double]
        switch alpha {
        case let .uniform(a):
            classWeights = Array(repeating: Double(a), count: k)
        case let .perClass(a):
            guard a.count == k else {
                throw BLASNetError.invalidArgument("FocalLoss: \(a.count) class weights (alpha) for \(k) classes")
            }
            classWeights = a.map(Double.init)
        }
        var gradient = Tensor(uninitializedShape: logits.shape)
        let loss = logits.withUnsafePointer { x in
            targets.withUnsafeBufferPointer { t in
                gradient.withUnsafeMutablePointer { dx in
                    Kernels.softmaxFocal(x, targets: t.baseAddress!, alpha: classWeights, gradient: dx, rows: n, classes: k,
                                         gamma: Double(gamma))
                }
            }
        }
        return (Float(loss), gradient)
    }
}

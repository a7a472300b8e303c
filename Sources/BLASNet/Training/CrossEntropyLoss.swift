/// Softmax cross-entropy, averaged over the batch (PyTorch's `F.cross_entropy`), with
/// optional label smoothing.
///
/// With smoothing ε over K classes the target distribution is `(1 − ε)·onehot + ε/K`, so
/// each row's loss is `(1 − ε)·(−log p_target) + ε·mean_k(−log p_k)`, as in PyTorch.
///
/// `logits: [N, K], targets: [N] -> loss: scalar, gradient: [N, K]`
public struct CrossEntropyLoss: Loss, Sendable {
    /// ε, in `0...1`.
    public let labelSmoothing: Float

    /// `nn.CrossEntropyLoss(label_smoothing:)`, mean over the batch; throws unless
    /// `labelSmoothing` lies in [0, 1).
    public init(labelSmoothing: Float = 0) throws {
        guard (0...1).contains(labelSmoothing) else {
            throw BLASNetError.invalidArgument("CrossEntropyLoss: label smoothing \(labelSmoothing) must lie in [0, 1]")
        }
        self.labelSmoothing = labelSmoothing
    }

    /// The mean loss and its gradient with respect to the logits.
    public func callAsFunction(_ logits: Tensor, targets: [Int]) throws -> (loss: Float, gradient: Tensor) {
        let (n, k) = try checkedShape(logits, targets: targets)
        var gradient = Tensor(uninitializedShape: logits.shape)
        let loss = logits.withUnsafePointer { x in
            targets.withUnsafeBufferPointer { t in
                gradient.withUnsafeMutablePointer { dx in
                    Kernels.softmaxCrossEntropy(x, targets: t.baseAddress!, gradient: dx, rows: n, classes: k,
                                                smoothing: Double(labelSmoothing))
                }
            }
        }
        return (Float(loss), gradient)
    }
}

/// A classification loss: the mean over the batch of a per-sample loss of the logits,
/// and its gradient with respect to them.
///
/// `logits: [N, K], targets: [N] -> loss: scalar, gradient: [N, K]`
public protocol Loss {
    /// The mean loss and its gradient with respect to the logits; throws if the shapes
    /// disagree or a target is outside `0..<K`.
    func callAsFunction(_ logits: Tensor, targets: [Int]) throws -> (loss: Float, gradient: Tensor)
}

extension Loss {
    /// `(N, K)` of `logits`, after checking them against `targets`.
    func checkedShape(_ logits: Tensor, targets: [Int]) throws -> (rows: Int, classes: Int) {
        // Named only on the error paths: describing a type allocates on every step.
        var name: String { String(describing: Self.self) }
        guard logits.shape.count == 2, logits.shape[0] == targets.count else {
            throw BLASNetError.shapeMismatch(layer: name, expected: "[\(targets.count), K] for \(targets.count) targets", got: logits.shape)
        }
        // A mean over no rows is 0/0: PyTorch returns NaN, a training step would apply it.
        guard !targets.isEmpty else { throw BLASNetError.invalidArgument("\(name): the batch is empty") }
        let (n, k) = (logits.shape[0], logits.shape[1])
        if let bad = targets.first(where: { !(0..<k).contains($0) }) {
            throw BLASNetError.invalidArgument("\(name): target \(bad) is outside 0..<\(k)")
        }
        return (n, k)
    }
}

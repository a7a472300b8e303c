import Foundation

/// Softmax cross-entropy, averaged over the batch (PyTorch's `F.cross_entropy`).
///
/// `logits: [N, K], targets: [N] -> loss: scalar, gradient: [N, K]`
public struct CrossEntropyLoss: Sendable {
    public init() {}

    /// The mean loss and its gradient with respect to the logits.
    public func callAsFunction(_ logits: Tensor, targets: [Int]) throws -> (loss: Float, gradient: Tensor) {
        guard logits.shape.count == 2, logits.shape[0] == targets.count, logits.shape[0] > 0 else {
            throw BLASNetError.shapeMismatch(layer: "CrossEntropyLoss", expected: "[\(targets.count), K] for \(targets.count) targets", got: logits.shape)
        }
        let (n, k) = (logits.shape[0], logits.shape[1])
        if let bad = targets.first(where: { !(0..<k).contains($0) }) {
            throw BLASNetError.invalidArgument("CrossEntropyLoss: target \(bad) is outside 0..<\(k)")
        }
        let values = logits.scalars
        var gradient = [Float](repeating: 0, count: values.count)
        var total = 0.0
        for i in 0..<n {
            // log-softmax with the row maximum subtracted, in Float64 so that large
            // logits neither overflow nor lose the small probabilities.
            let row = values[(i * k)..<((i + 1) * k)].map(Double.init)
            let top = row.max()!
            let logSum = log(row.reduce(0) { $0 + exp($1 - top) }) + top
            total += logSum - row[targets[i]]
            for j in 0..<k {
                let p = exp(row[j] - logSum)
                gradient[i * k + j] = Float((p - (j == targets[i] ? 1 : 0)) / Double(n))
            }
        }
        return (Float(total / Double(n)), try Tensor(shape: logits.shape, scalars: gradient))
    }
}

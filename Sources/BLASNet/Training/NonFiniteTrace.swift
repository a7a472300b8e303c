/// Finds where a training step first produced a value that is not finite, by replaying
/// the step with every layer watched: forward outputs in the order the layers ran, then
/// the loss, then each layer's input and parameter gradients in the order backward
/// computed them.
final class NonFiniteTrace: LayerObserver {
    private let names: LayerNames
    /// Names of the layer calls in progress, innermost last (private layers are named after their owner).
    private var owners: [String] = []
    /// The first place a non-finite value appeared, such as `layer2.0.bn1 (forward output)`.
    private(set) var location: String?

    private init(_ model: any Module) {
        names = LayerNames(model)
    }

    func observe(_ module: any Module, backward: Bool, _ body: () throws -> Tensor) throws -> Tensor {
        let name = names.label(module, owner: owners.last).name
        owners.append(name)
        defer { owners.removeLast() }
        let result = try body()
        // Children finish first, so the innermost layer claims the value before its containers.
        guard location == nil else { return result }
        if !result.isFinite {
            location = "\(name) (\(backward ? "input gradient" : "forward output"))"
        } else if backward, let bad = module.localParameters.first(where: { $0.parameter.requiresGrad && $0.parameter.grad?.isFinite == false }) {
            location = "\(name).\(bad.name) (gradient)"
        }
        return result
    }

    /// Replays a step of `model` on `images` and `labels` and says where it first produced
    /// a value that is not finite. Changes what a step changes (gradients, batch statistics).
    ///
    /// The whole step runs even past the first such value: with synchronized BatchNorm
    /// every process sums statistics with the others in forward and backward, and a
    /// process that stopped early (its own shard went non-finite first) would leave the
    /// others waiting, or pair their sums with its next step's.
    static func locate(model: any Module, loss: any Loss, images: Tensor, labels: [Int]) -> String {
        let trace = NonFiniteTrace(model)
        LayerObservers.run(trace) {
            do {
                let logits = try model.forward(images)
                let (value, gradient) = try loss(logits, targets: labels)
                if trace.location == nil, !(value.isFinite && gradient.isFinite) {
                    trace.location = "the loss (logits finite)"
                }
                model.zeroGrad()
                _ = try model.backward(gradient)
            } catch {
                trace.location = trace.location ?? "a failed replay (\(error))"
            }
        }
        return trace.location ?? "nowhere when the step was replayed"
    }
}

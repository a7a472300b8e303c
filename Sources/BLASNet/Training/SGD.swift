/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` semantics:
/// `g = grad + wd·w`; with momentum `b = μ·b + (1 − dampening)·g` (first step `b = g`),
/// Nesterov `g = g + μ·b`, otherwise `g = b`; then `w −= lr·g`.
public final class SGD {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var momentum: Float
    public var dampening: Float
    public var weightDecay: Float
    public var nesterov: Bool
    /// Momentum buffers, one per parameter (none without momentum), filled by the first step.
    public private(set) var momentumBuffers: [Tensor]
    private var steps = 0

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) throws {
        guard learningRate >= 0, momentum >= 0, weightDecay >= 0 else {
            throw BLASNetError.invalidArgument(
                "SGD: learning rate \(learningRate), momentum \(momentum) and weight decay \(weightDecay) must be non-negative")
        }
        guard !nesterov || (momentum > 0 && dampening == 0) else {
            throw BLASNetError.invalidArgument("SGD: Nesterov momentum requires a momentum and zero dampening")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        momentumBuffers = momentum != 0 ? parameters.map { Tensor(shape: $0.value.shape) } : []
    }

    /// Applies one update to every parameter that requires a gradient.
    public func step() {
        for (index, p) in parameters.enumerated() where p.requiresGrad {
            let count = p.value.count
            let update = { (b: UnsafeMutablePointer<Float>?) in
                p.grad.withUnsafePointer { g in
                    p.value.withUnsafeMutablePointer { w in
                        Kernels.sgdStep(w, grad: g, buffer: b, count: count,
                                        learningRate: self.learningRate, momentum: self.momentum, dampening: self.dampening,
                                        weightDecay: self.weightDecay, nesterov: self.nesterov, firstStep: self.steps == 0)
                    }
                }
            }
            if momentum != 0 {
                momentumBuffers[index].withUnsafeMutablePointer { update($0) }
            } else {
                update(nil)
            }
        }
        steps += 1
    }
}

/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` semantics:
/// `g = grad + wd·w`; with momentum `b = μ·b + (1 − dampening)·g` (a parameter's first
/// update sets `b = g`), Nesterov `g = g + μ·b`, otherwise `g = b`; then `w −= lr·g`.
///
/// Checkpoint state: `optimizer.momentum_buffer.<index>` for each parameter updated so far
/// (none without momentum).
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float
    public let dampening: Float
    public let weightDecay: Float
    public let nesterov: Bool
    public private(set) var stepCount = 0
    /// Momentum buffers by parameter index; nil until the parameter's first update, and always without momentum.
    public private(set) var momentumBuffers: [Tensor?]

    private var layout: OptimizerStateLayout {
        OptimizerStateLayout(optimizer: "SGD", buffers: momentum != 0 ? ["momentum_buffer"] : [])
    }

    /// `torch.optim.SGD` over `parameters`, with its arguments and defaults. Throws unless
    /// every rate is finite and non-negative, and Nesterov momentum has a momentum and no dampening.
    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) throws {
        guard [learningRate, momentum, dampening, weightDecay].allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw BLASNetError.invalidArgument(
                "SGD: learning rate \(learningRate), momentum \(momentum), dampening \(dampening) and weight decay \(weightDecay) must be finite and non-negative")
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
        momentumBuffers = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        // As PyTorch, a parameter no backward pass has reached (no gradient) is not updated.
        for (index, p) in parameters.enumerated() where p.requiresGrad {
            guard let grad = p.grad else { continue }
            // A new buffer is written in full by the kernel's first step.
            let firstStep = momentum != 0 && momentumBuffers[index] == nil
            if firstStep { momentumBuffers[index] = Tensor(uninitializedShape: p.value.shape) }
            let count = p.value.count
            withOptionalMutablePointer(&momentumBuffers[index]) { b in
                grad.withUnsafePointer { g in
                    p.value.withUnsafeMutablePointer { w in
                        Kernels.sgdStep(w, grad: g, buffer: b, count: count, learningRate: learningRate, momentum: momentum,
                                        dampening: dampening, weightDecay: weightDecay, nesterov: nesterov, firstStep: firstStep)
                    }
                }
            }
        }
        stepCount += 1
    }

    public func stateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for (index, buffer) in momentumBuffers.enumerated() {
            if let buffer { state[OptimizerStateLayout.key("momentum_buffer", index)] = buffer }
        }
        return state
    }

    public func loadState(_ tensors: [String: Tensor], stepCount: Int) throws {
        momentumBuffers = try layout.parse(tensors, parameters: parameters, stepCount: stepCount).map { $0?["momentum_buffer"] }
        self.stepCount = stepCount
    }
}

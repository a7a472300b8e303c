extension Kernels {
    /// One `torch.optim.SGD` update of `count` weights; `buffer` is the momentum
    /// buffer (nil without momentum), overwritten with `d` on the first step.
    static func sgdStep(_ w: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>, buffer: UnsafeMutablePointer<Float>?,
                        count: Int, learningRate lr: Float, momentum mu: Float, dampening: Float, weightDecay wd: Float,
                        nesterov: Bool, firstStep: Bool) {
        parallelFor(count, grain: elementGrain) { range in
            for i in range {
                var d = g[i] + wd * w[i]
                if let b = buffer {
                    b[i] = firstStep ? d : mu * b[i] + (1 - dampening) * d
                    d = nesterov ? d + mu * b[i] : b[i]
                }
                w[i] -= lr * d
            }
        }
    }
}

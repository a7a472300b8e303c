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

extension Kernels {
    /// One `torch.optim.AdamW` update of `count` weights, each operation in the order of
    /// PyTorch's single-tensor loop: decay `w`, lerp the mean `m` toward `g`, update the
    /// squared mean `v` (and its running maximum `maxSquareMean` with amsgrad), then
    /// `w += negativeStepSize·m / (√v / biasCorrection2Root + epsilon)`.
    static func adamWStep(_ w: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>, mean m: UnsafeMutablePointer<Float>,
                          squareMean v: UnsafeMutablePointer<Float>, maxSquareMean vMax: UnsafeMutablePointer<Float>?,
                          count: Int, decay: Float, meanWeight: Float, beta2: Float, squareWeight: Float,
                          biasCorrection2Root: Float, epsilon: Float, negativeStepSize: Float) {
        parallelFor(count, grain: elementGrain) { range in
            for i in range {
                w[i] *= decay
                m[i] += meanWeight * (g[i] - m[i])
                v[i] = v[i] * beta2 + squareWeight * g[i] * g[i]
                var normalizer = v[i]
                if let vMax {
                    vMax[i] = max(vMax[i], v[i])
                    normalizer = vMax[i]
                }
                w[i] += negativeStepSize * m[i] / (normalizer.squareRoot() / biasCorrection2Root + epsilon)
            }
        }
    }
}

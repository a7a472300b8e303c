extension Kernels {
    /// One `torch.optim.SGD` update of `count` weights; `buffer` is the momentum
    /// buffer (nil without momentum), overwritten with `d` on the first step.
    static func sgdStep(_ w: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>, buffer: UnsafeMutablePointer<Float>?,
                        count: Int, learningRate lr: Float, momentum mu: Float, dampening: Float, weightDecay wd: Float,
                        nesterov: Bool, firstStep: Bool) {
        parallelFor(count, grain: elementGrain, (w, g, buffer, lr, mu, dampening, wd, nesterov, firstStep)) { range, captures in
            let (w, g, buffer, lr, mu, dampening, wd, nesterov, firstStep) = captures
            guard let b = buffer else {
                for i in range { w[i] -= lr * (g[i] + wd * w[i]) }
                return
            }
            // Every step after the first, without Nesterov: the loop that runs for hours,
            // kept free of branches so that it vectorizes.
            if !firstStep && !nesterov {
                let keep = 1 - dampening
                for i in range {
                    b[i] = mu * b[i] + keep * (g[i] + wd * w[i])
                    w[i] -= lr * b[i]
                }
                return
            }
            for i in range {
                let d = g[i] + wd * w[i]
                b[i] = firstStep ? d : mu * b[i] + (1 - dampening) * d
                w[i] -= lr * (nesterov ? d + mu * b[i] : b[i])
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
        // ATen's lerp: from m for a weight under ½, from g beyond, so that β1 = 0 gives m = g
        // exactly. ATen fuses the multiply-add (one ulp apart at most); a fused one here
        // would call libm's fmaf per element, since the build does not assume FMA.
        let fromMean = meanWeight.magnitude < 0.5, remaining = 1 - meanWeight
        let captures = (w, g, m, v, vMax, decay, meanWeight, fromMean, remaining, beta2, squareWeight,
                        biasCorrection2Root, epsilon, negativeStepSize)
        parallelFor(count, grain: elementGrain, captures) { range, captures in
            let (w, g, m, v, vMax, decay, meanWeight, fromMean, remaining, beta2, squareWeight,
                 biasCorrection2Root, epsilon, negativeStepSize) = captures
            for i in range {
                w[i] *= decay
                m[i] = fromMean ? m[i] + meanWeight * (g[i] - m[i]) : g[i] - (g[i] - m[i]) * remaining
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

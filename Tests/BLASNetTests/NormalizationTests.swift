import Foundation
import Testing
@testable import BLASNet

/// GroupNorm, LayerNorm and InstanceNorm2d against finite differences and written-out
/// formulas, and the `norm` option of ResNet.
struct NormalizationTests {
    /// `(x − μ)/√(σ² + ε)·γ_c + β_c` with μ and σ² over `members(c, n)` of each element's
    /// group, in Float64, for `x: [C, N, S]` channel-major.
    static func reference(_ x: Tensor, gamma: [Float], beta: [Float], eps: Double = 1e-5,
                          group: (_ c: Int, _ n: Int) -> [(c: Int, n: Int)]) -> [Double] {
        let (channels, samples) = (x.shape[0], x.shape[1])
        let size = x.count / (channels * samples)
        let v = x.scalars.map(Double.init)
        func plane(_ c: Int, _ n: Int) -> ArraySlice<Double> { v[((c * samples + n) * size)..<((c * samples + n + 1) * size)] }
        return (0..<channels).flatMap { c in
            (0..<samples).flatMap { n in
                let values = group(c, n).flatMap { plane($0.c, $0.n) }
                let mean = values.reduce(0, +) / Double(values.count)
                let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
                return plane(c, n).map { ($0 - mean) / (variance + eps).squareRoot() * Double(gamma[c]) + Double(beta[c]) }
            }
        }
    }

    static func expectClose(_ y: Tensor, _ reference: [Double], tolerance: Double = 1e-5,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        // allSatisfy, not max(): max() skips a NaN after the first element.
        let errors = zip(y.scalars, reference).map { abs(Double($0) - $1) }
        #expect(y.count == reference.count && errors.allSatisfy { $0 <= tolerance },
                "\(y.count) values for \(reference.count); largest error \(errors.maxOrNaN() ?? 0)", sourceLocation: sourceLocation)
    }

    static func randomAffine(_ weight: Parameter?, _ bias: Parameter?, seed: UInt64) {
        weight?.value = GradientCheck.random(weight!.value.shape, scale: 0.5, seed: seed)
        bias?.value = GradientCheck.random(bias!.value.shape, seed: seed + 1)
    }

    @Test(arguments: [1, 2, 3, 6])
    func groupNormMatchesItsDefinition(groups: Int) throws {
        let gn = try GroupNorm(groups: groups, channels: 6)
        Self.randomAffine(gn.weight, gn.bias, seed: 40)
        let x = GradientCheck.random([6, 3, 4, 5], scale: 2, seed: 41)
        let perGroup = 6 / groups
        let expected = Self.reference(x, gamma: gn.weight!.value.scalars, beta: gn.bias!.value.scalars) { c, n in
            (c / perGroup * perGroup..<(c / perGroup + 1) * perGroup).map { ($0, n) }
        }
        Self.expectClose(try gn.forward(x), expected)
    }

    @Test(arguments: [1, 2, 3, 6])
    func groupNormGradients(groups: Int) throws {
        let gn = try GroupNorm(groups: groups, channels: 6)
        Self.randomAffine(gn.weight, gn.bias, seed: 42)
        try GradientCheck.check(gn, input: GradientCheck.random([6, 3, 4, 3], seed: 43), tolerance: 2e-2)
    }

    /// A single process's sum: the values as they are.
    final class OneProcess: CrossProcessSum {
        func sum(_ values: inout [Double]) throws {}
    }

    /// Two processes holding the same values: every sum doubles, and counts them too.
    final class TwinProcesses: CrossProcessSum {
        private(set) var calls = 0
        func sum(_ values: inout [Double]) throws {
            calls += 1
            for i in values.indices { values[i] *= 2 }
        }
    }

    /// As PyTorch's SyncBatchNorm, one value per channel in each process trains when the
    /// global batch has more; a single process with one refuses. An inference backward
    /// through running statistics sums nothing over the processes.
    @Test func synchronizedBatchNormCountsTheGlobalBatch() throws {
        let x = GradientCheck.random([3, 1, 1, 1], seed: 47)
        let alone = try BatchNorm2d(3)
        alone.synchronization = OneProcess()
        #expect(throws: BLASNetError.self) { try alone.forward(x) }
        let bn = try BatchNorm2d(3)
        let twins = TwinProcesses()
        bn.synchronization = twins
        // Identical values in both processes: zero variance, so the output is β, and x̂ = 0:
        // dx = γ/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) = 0 (each channel's two dy are equal),
        // dγ = Σ dy·x̂ = 0 and dβ = dy (this process's: parameter gradients are not summed).
        #expect(try bn.forward(x).scalars == bn.bias.value.scalars)
        let dy = GradientCheck.random([3, 1, 1, 1], seed: 48)
        let dx = try bn.backward(dy)
        #expect(dx.shape == x.shape && dx.scalars.allSatisfy { abs($0) <= 1e-4 }, "dx \(dx.scalars)")
        let dGamma = try bn.weight.requiredGrad().scalars
        #expect(dGamma.allSatisfy { abs($0) <= 1e-6 }, "dγ \(dGamma)")
        #expect(try bn.bias.requiredGrad().scalars == dy.scalars)
        #expect(twins.calls == 2)
        bn.eval()
        _ = try bn.forward(x)
        let before = twins.calls
        _ = try bn.backward(GradientCheck.random([3, 1, 1, 1], seed: 49))
        #expect(twins.calls == before)
    }

    /// Twin processes holding the same batch: the global mean and variance are the local
    /// ones, so the synchronized output and input gradient are an unsynchronized
    /// BatchNorm's on the same x and dy, to float rounding. γ and β keep this process's
    /// gradients (data parallelism averages them afterwards), the same as alone; only the
    /// running variance differs, its unbiased correction taken over the global count 2m.
    @Test(arguments: [false, true])
    func synchronizedBatchNormOfTwinsMatchesOneProcess(relu: Bool) throws {
        let x = GradientCheck.random([5, 3, 4, 3], scale: 2, seed: 70), dy = GradientCheck.random([5, 3, 4, 3], seed: 71)
        let (alone, synchronized) = (try BatchNorm2d(5, fusesReLU: relu), try BatchNorm2d(5, fusesReLU: relu))
        Self.randomAffine(alone.weight, alone.bias, seed: 72)
        (synchronized.weight.value, synchronized.bias.value) = (alone.weight.value, alone.bias.value)
        let twins = TwinProcesses()
        synchronized.synchronization = twins
        func expectClose(_ a: Tensor, _ b: Tensor, _ what: String) {
            let scale = b.scalars.map { Double(abs($0)) }.maxOrNaN() ?? 0
            #expect(a.shape == b.shape && scale.isFinite && scale > 0
                    && zip(a.scalars, b.scalars).allSatisfy { abs(Double($0) - Double($1)) <= 1e-6 * scale },
                    "\(what): \(a.scalars.prefix(6)) … against \(b.scalars.prefix(6)) …")
        }
        let y = try synchronized.forward(x)
        expectClose(y, try alone.forward(x), "output")
        expectClose(try synchronized.backward(dy), try alone.backward(dy), "dx")
        expectClose(try synchronized.weight.requiredGrad(), try alone.weight.requiredGrad(), "dγ")
        expectClose(try synchronized.bias.requiredGrad(), try alone.bias.requiredGrad(), "dβ")
        #expect(twins.calls == 2, "statistics summed forward and backward")
        if relu { #expect(y.scalars.contains(0) && y.scalars.contains { $0 > 0 }) }

        expectClose(synchronized.runningMean.value, alone.runningMean.value, "running mean")
        let m = Double(x.count / 5), v = x.scalars.map(Double.init)
        let runningVar = (0..<5).map { c -> Float in
            let plane = v[(c * Int(m))..<((c + 1) * Int(m))], mean = plane.reduce(0, +) / m
            let biased = plane.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / m
            return Float(0.9 + 0.1 * biased * 2 * m / (2 * m - 1))
        }
        expectClose(synchronized.runningVar.value, try Tensor(shape: [5], scalars: runningVar), "running variance")
    }

    /// As in PyTorch, training on an empty batch returns an empty output and gradient, adds
    /// zero to γ and β, leaves the running statistics and counts the batch.
    @Test func batchNormTrainsOnAnEmptyBatch() throws {
        let bn = try BatchNorm2d(3)
        let y = try bn.forward(Tensor(shape: [3, 0, 4, 4]))
        #expect(y.shape == [3, 0, 4, 4])
        #expect(bn.runningMean.value.scalars == [0, 0, 0] && bn.runningVar.value.scalars == [1, 1, 1])
        #expect(bn.numBatchesTracked.value[0] == 1)
        #expect(try bn.backward(Tensor(shape: [3, 0, 4, 4])).shape == [3, 0, 4, 4])
        #expect(try bn.weight.requiredGrad().scalars == [0, 0, 0] && bn.bias.requiredGrad().scalars == [0, 0, 0])
        // One value per channel is still too few to train on.
        #expect(throws: BLASNetError.self) { try bn.forward(Tensor(shape: [3, 1, 1, 1])) }
    }

    /// An infinite input makes its channel's batch variance NaN, and PyTorch carries that
    /// into running_var; the other channels' statistics stay finite. Both BatchNorm paths.
    @Test(arguments: [false, true])
    func batchNormCarriesANaNVarianceIntoTheRunningStatistics(synchronized: Bool) throws {
        let bn = try BatchNorm2d(3)
        if synchronized { bn.synchronization = OneProcess() }
        var x = GradientCheck.random([3, 2, 4, 4], seed: 50)
        x[40] = .infinity // channel 1
        _ = try bn.forward(x)
        let runningVar = bn.runningVar.value.scalars
        #expect(runningVar[1].isNaN, "running_var \(runningVar[1]) for a channel holding an infinity")
        #expect(runningVar[0].isFinite && runningVar[2].isFinite)
    }

    /// BatchNorm normalizes one plane at a time (statistics, then the affine; sums, then
    /// the input gradient) unless it must wait for other processes' statistics. A
    /// one-process synchronization takes the two-pass way over the whole tensor; both give
    /// the same output, gradients and running statistics, bit for bit.
    @Test(arguments: [false, true])
    func batchNormOnePassMatchesTwoPasses(relu: Bool) throws {
        func pass(synchronized: Bool) throws -> [[Float]] {
            let bn = try BatchNorm2d(5, fusesReLU: relu)
            Self.randomAffine(bn.weight, bn.bias, seed: 44)
            if synchronized { bn.synchronization = OneProcess() }
            let y = try bn.forward(GradientCheck.random([5, 3, 7, 9], scale: 2, seed: 45))
            let dx = try bn.backward(GradientCheck.random([5, 3, 7, 9], seed: 46))
            return [y, dx, try bn.weight.requiredGrad(), try bn.bias.requiredGrad(), bn.runningMean.value, bn.runningVar.value].map(\.scalars)
        }
        #expect(try pass(synchronized: false) == pass(synchronized: true))
    }

    /// A normalization layer keeps its scratch buffers from call to call: run on inputs of
    /// changing batch and size, each pass matches a fresh layer's bit for bit.
    @Test func layersKeepNoStateBetweenGeometries() throws {
        let shapes = [[4, 3, 3, 2], [4, 5, 2, 2], [4, 1, 3, 3], [4, 3, 3, 2]]
        func pass(_ layer: any Module, _ shape: [Int], seed: UInt64) throws -> [[Float]] {
            let y = try layer.forward(GradientCheck.random(shape, seed: seed))
            let dx = try layer.backward(GradientCheck.random(shape, seed: seed + 1))
            return [y.scalars, dx.scalars] + (try layer.namedParameters().map { try $0.parameter.requiredGrad().scalars })
        }
        let makers: [() throws -> any Module] = [
            { try GroupNorm(groups: 2, channels: 4, fusesReLU: true) },
            { try InstanceNorm2d(4, affine: true, trackRunningStats: true) },
            { try BatchNorm2d(4) },
        ]
        for make in makers {
            let kept = try make()
            for (i, shape) in shapes.enumerated() {
                kept.zeroGrad()
                let fresh = try make()
                for (from, to) in zip(kept.namedParameters(), fresh.namedParameters()) { to.parameter.value = from.parameter.value }
                for (from, to) in zip(kept.namedBuffers(), fresh.namedBuffers()) { to.buffer.value = from.buffer.value }
                #expect(try pass(kept, shape, seed: 60 + UInt64(i)) == pass(fresh, shape, seed: 60 + UInt64(i)), "\(kept) \(shape)")
            }
        }
    }

    /// The fused ReLU's kink is at `γ·x̂ + β = 0`: β puts it in the widest gap between each
    /// channel's values, and no step of the check moves any of them a tenth of the way there.
    @Test func groupNormFusedReLU() throws {
        let gn = try GroupNorm(groups: 2, channels: 4, fusesReLU: true)
        let x = GradientCheck.random([4, 3, 3, 2], seed: 45), h: Float = 1e-3
        func preActivation(_ x: Tensor, _ gamma: [Float], _ beta: [Float]) -> [Double] {
            Self.reference(x, gamma: gamma, beta: beta) { c, n in (c / 2 * 2..<c / 2 * 2 + 2).map { ($0, n) } }
        }
        let gamma: [Float] = [0.7, -0.5, 0.9, 0.4]
        let beta = GradientCheck.betaBetweenValues(preActivation(x, gamma, [0, 0, 0, 0]), channels: 4)
        (gn.weight!.value, gn.bias!.value) = (try Tensor(shape: [4], scalars: gamma), try Tensor(shape: [4], scalars: beta))
        GradientCheck.expectClearOfKink(x: x, gamma: gamma, beta: beta, h: h, preActivation: preActivation)
        let plain = try GroupNorm(groups: 2, channels: 4)
        plain.weight!.value = gn.weight!.value
        plain.bias!.value = gn.bias!.value
        let y = try gn.forward(x).scalars
        #expect(try y == plain.forward(x).scalars.map { max($0, 0) })
        #expect(y.contains(0) && y.contains { $0 > 0 })
        try GradientCheck.check(gn, input: x, h: h, tolerance: 2e-2)
    }

    @Test func groupNormWithoutAffineAndOnVectors() throws {
        let gn = try GroupNorm(groups: 2, channels: 4, affine: false)
        #expect(gn.namedParameters().isEmpty)
        try GradientCheck.check(gn, input: GradientCheck.random([4, 5, 2, 2], seed: 46), tolerance: 2e-2)
        // Vectors `[C, N]`, as `[C, N, 1, 1]`; one group, since two values normalize to about ±1
        // whatever their difference, too steep for finite differences.
        let vectors = try GroupNorm(groups: 1, channels: 4, affine: false)
        try GradientCheck.check(vectors, input: GradientCheck.random([4, 5], seed: 47), tolerance: 2e-2)
    }

    @Test func groupNormRejectsGroupsThatDoNotDivideTheChannels() throws {
        #expect(throws: BLASNetError.self) { try GroupNorm(groups: 4, channels: 6) }
        #expect(throws: BLASNetError.self) { try GroupNorm(groups: 0, channels: 6) }
        #expect(throws: BLASNetError.self) { try GroupNorm(groups: 2, channels: 6).forward(Tensor(shape: [4, 2, 3, 3])) }
    }

    @Test func layerNormOfVectors() throws {
        let ln = try LayerNorm(normalizedShape: 5)
        Self.randomAffine(ln.weight, ln.bias, seed: 48)
        #expect(ln.namedParameters().map(\.name) == ["weight", "bias"])
        #expect(ln.weight?.value.shape == [5])
        // nn.LayerNorm(5) of x[n, :]: each sample over its 5 features; here x is [F, N].
        let x = GradientCheck.random([5, 4], scale: 3, seed: 49)
        let expected = Self.reference(x, gamma: ln.weight!.value.scalars, beta: ln.bias!.value.scalars) { _, n in
            (0..<5).map { ($0, n) }
        }
        Self.expectClose(try ln.forward(x), expected)
        try GradientCheck.check(ln, input: x, tolerance: 2e-2)
        #expect(throws: BLASNetError.self) { try ln.forward(Tensor(shape: [5, 4, 2, 2])) }
        #expect(try LayerNorm(normalizedShape: 3, elementwiseAffine: false).namedParameters().isEmpty)
    }

    /// An InstanceNorm2d(3) with random affine and running statistics as asked.
    static func instanceNorm(affine: Bool, track: Bool) throws -> InstanceNorm2d {
        let norm = try InstanceNorm2d(3, affine: affine, trackRunningStats: track)
        randomAffine(norm.weight, norm.bias, seed: 50)
        norm.runningMean?.value = GradientCheck.random([3], scale: 0.3, seed: 52)
        norm.runningVar?.value = try Tensor(shape: [3], scalars: [0.6, 1.3, 0.9])
        return norm
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func instanceNormGradients(affine: Bool, track: Bool) throws {
        for training in [true, false] {
            let norm = try Self.instanceNorm(affine: affine, track: track)
            norm.setTraining(training)
            try GradientCheck.check(norm, input: GradientCheck.random([3, 2, 4, 3], seed: 53), tolerance: 2e-2)
        }
    }

    @Test func instanceNormStatisticsFollowPyTorch() throws {
        let x = GradientCheck.random([3, 4, 3, 5], scale: 2, seed: 54)
        let norm = try Self.instanceNorm(affine: true, track: true)
        let (mean0, var0) = (norm.runningMean!.value.scalars, norm.runningVar!.value.scalars)
        let (gamma, beta) = (norm.weight!.value.scalars, norm.bias!.value.scalars)

        // Training: each (channel, sample) over its own H×W, as GroupNorm(C, C) does.
        let y = try norm.forward(x)
        Self.expectClose(y, Self.reference(x, gamma: gamma, beta: beta) { c, n in [(c, n)] })
        let gn = try GroupNorm(groups: 3, channels: 3)
        (gn.weight!.value, gn.bias!.value) = (norm.weight!.value, norm.bias!.value)
        #expect(try gn.forward(x) == y)

        // Running statistics move toward the batch means of the instance means and unbiased variances.
        let v = x.scalars.map(Double.init)
        for c in 0..<3 {
            let planes = (0..<4).map { n in Array(v[((c * 4 + n) * 15)..<((c * 4 + n + 1) * 15)]) }
            let means = planes.map { $0.reduce(0, +) / 15 }
            let variances = zip(planes, means).map { plane, m in plane.reduce(0) { $0 + ($1 - m) * ($1 - m) } / 14 }
            let runningMean = 0.9 * Double(mean0[c]) + 0.1 * means.reduce(0, +) / 4
            let runningVar = 0.9 * Double(var0[c]) + 0.1 * variances.reduce(0, +) / 4
            #expect(abs(Double(norm.runningMean!.value[c]) - runningMean) < 1e-6)
            #expect(abs(Double(norm.runningVar!.value[c]) - runningVar) < 1e-6)
        }
        // PyTorch's InstanceNorm2d.forward never increments num_batches_tracked.
        #expect(norm.numBatchesTracked!.value[0] == 0)

        // Inference with tracked statistics uses them.
        norm.eval()
        let (rm, rv) = (norm.runningMean!.value.scalars, norm.runningVar!.value.scalars)
        let expected = x.scalars.enumerated().map { i, value in
            let c = i / 60
            return (Double(value) - Double(rm[c])) / (Double(rv[c]) + 1e-5).squareRoot() * Double(gamma[c]) + Double(beta[c])
        }
        Self.expectClose(try norm.forward(x), expected)
        // Without tracking, inference still normalizes each instance.
        let untracked = try Self.instanceNorm(affine: true, track: false)
        untracked.eval()
        #expect(try untracked.forward(x) == y)
        #expect(untracked.namedBuffers().isEmpty)
        #expect(norm.namedBuffers().map(\.name) == ["running_mean", "running_var", "num_batches_tracked"])
        #expect(throws: BLASNetError.self) { try untracked.forward(Tensor(shape: [3, 2, 1, 1])) }
    }

    @Test func normalizationParsesItsCommandLineForm() throws {
        for (text, norm) in [("batch", Normalization.batch), ("group", .group(32)), ("group:8", .group(8)),
                             ("layer", .layer), ("instance", .instance)] {
            #expect(try Normalization(parsing: text) == norm)
            #expect(try Normalization(parsing: norm.description) == norm)
        }
        for bad in ["", "Batch", "group:", "group:0", "group:-2", "group:x", "layer:2", "instance:4", "batch:1"] {
            #expect(throws: BLASNetError.self, "\(bad)") { try Normalization(parsing: bad) }
        }
    }

    @Test(arguments: [Normalization.group(4), .layer, .instance])
    func everyNormSlotKeepsItsName(_ norm: Normalization) throws {
        for arch in [Architecture.seresnet8, .resnet50] {
            let batch = try ResNet(arch, numClasses: 3, stem: .cifar, width: 8)
            let other = try ResNet(arch, numClasses: 3, stem: .cifar, width: 8, norm: norm)
            let running = ["running_mean", "running_var", "num_batches_tracked"]
            let batchKeys = batch.stateDict().filter { key in !running.contains { key.name.hasSuffix($0) } }
            #expect(other.stateDict().map(\.name) == batchKeys.map(\.name))
            #expect(other.stateDict().map(\.tensor.shape) == batchKeys.map(\.tensor.shape))
            #expect(other.namedBuffers().isEmpty)
            #expect(other.stateDict().contains { $0.name == "layer2.0.downsample.1.weight" })
        }
    }

    @Test func groupCountThatDoesNotDivideTheWidthNamesTheSlot() throws {
        #expect(throws: BLASNetError.invalidArgument(
            "normalization group:32 does not fit bn1: its 24 channels are not a multiple of 32 groups")) {
            try ResNet(.resnet8, numClasses: 3, stem: .cifar, width: 24, norm: .group(32))
        }
        var rng = SeededGenerator(seed: 57)
        #expect(throws: BLASNetError.self) {
            try BasicBlock.block(inChannels: 8, planes: 12, stride: 1, squeezeExcitation: false, norm: .group(8),
                                 workspace: Workspace(), rng: &rng)
        }
    }

    @Test func groupNormBlockGradients() throws {
        var rng = SeededGenerator(seed: 55)
        let block = try BasicBlock.block(inChannels: 4, planes: 4, stride: 1, squeezeExcitation: true, norm: .group(2),
                                         workspace: Workspace(), rng: &rng)
        let gn = try #require(block.branch[1].module as? GroupNorm)
        #expect(gn.fusesReLU && gn.groups == 2)
        try GradientCheck.checkDirectional(block, input: GradientCheck.random([4, 2, 5, 4], seed: 56), h: 1e-3,
                                           tolerance: 2e-2)
    }

    /// A batch of one image at a 1×1 map leaves BatchNorm one value per channel; the error
    /// names the input in PyTorch's `[N, C, H, W]`, not the channel-major layout inside.
    @Test func batchNormNamesASingleValueInPyTorchsLayout() throws {
        let bn = try BatchNorm(3)
        #expect { try bn.forward(Tensor(shape: [3, 1, 1, 1])) } throws: {
            "\($0)".contains("got 1 from an input of [1, 3, 1, 1]")
        }
        bn.eval()
        #expect(try bn.forward(Tensor(shape: [3, 1, 1, 1])).shape == [3, 1, 1, 1])
    }
}

import Foundation
import Testing
@testable import BLASNet

/// `withoutGradients`: the same results, and nothing kept for a backward pass.
struct GradientModeTests {
    /// Every layer that keeps tensors for its backward pass, with an input it takes.
    static let layers: [(name: String, make: @Sendable () throws -> (any Module, [Int]))] = [
        ("Conv2d", { var rng = SeededGenerator(seed: 1); return (try Conv2d(3, 4, kernelSize: 3, padding: 1, rng: &rng), [3, 2, 6, 5]) }),
        ("Linear", { var rng = SeededGenerator(seed: 2); return (try Linear(5, 3, rng: &rng), [5, 4]) }),
        ("ReLU", { (ReLU(), [3, 2, 4, 4]) }),
        ("Sigmoid", { (Sigmoid(), [3, 2, 4, 4]) }),
        ("BatchNorm2d+ReLU", { (try BatchNorm(3, fusesReLU: true), [3, 2, 4, 4]) }),
        ("GroupNorm+ReLU", { (try GroupNorm(groups: 2, channels: 4, fusesReLU: true), [4, 2, 3, 3]) }),
        ("LayerNorm", { (try LayerNorm(normalizedShape: 6), [6, 3]) }),
        ("InstanceNorm2d", { (try InstanceNorm2d(3), [3, 2, 4, 4]) }),
        ("SEBlock", { var rng = SeededGenerator(seed: 3); return (try SEBlock(16, rng: &rng), [16, 2, 3, 3]) }),
        ("BasicBlock", {
            var rng = SeededGenerator(seed: 4)
            return (try BasicBlock.block(inChannels: 4, planes: 4, stride: 1, squeezeExcitation: false, workspace: Workspace(), rng: &rng),
                    [4, 2, 5, 5])
        }),
    ]

    /// After an ordinary forward the layer holds its input or its output; after one inside
    /// `withoutGradients` it holds neither (both are uniquely referenced again), the output
    /// is the same to the bit, and backward throws instead of differentiating stale tensors.
    @Test(arguments: 0..<layers.count)
    func layerKeepsNothingForBackward(_ index: Int) throws {
        let (layer, shape) = try Self.layers[index].make()
        layer.train()
        var x = GradientCheck.random(shape, seed: 10)
        var recorded = try layer.forward(x)
        #expect(!x.isUniquelyReferenced() || !recorded.isUniquelyReferenced(), "\(Self.layers[index].name) kept nothing")

        var y = try withoutGradients { try layer.forward(x) }
        #expect(x.isUniquelyReferenced() && y.isUniquelyReferenced() && recorded.isUniquelyReferenced(),
                "\(Self.layers[index].name) kept a tensor inside withoutGradients")
        #expect(y == recorded)
        #expect(throws: BLASNetError.self) { try layer.backward(GradientCheck.random(y.shape, seed: 11)) }

        // Gradients are back on outside the block: the same layer differentiates again.
        _ = try layer.forward(x)
        #expect(try layer.backward(GradientCheck.random(y.shape, seed: 11)).shape == shape)
    }

    @Test func modelGivesTheSameLogitsAndRefusesBackward() throws {
        let net = try ResNet(.seresnet8, numClasses: 3, inChannels: 2, stem: .cifar, width: 16, seed: 5)
        let x = GradientCheck.random([3, 2, 8, 8], seed: 6)
        for training in [false, true] {
            if training { net.train() } else { net.eval() }
            let recorded = try net.forward(x)
            let logits = try withoutGradients { try net.forward(x) }
            #expect(logits == recorded)
            #expect(throws: BLASNetError.self) { try net.backward(GradientCheck.random(logits.shape, seed: 7)) }
        }
    }

    /// Gradient memory comes with the first backward pass (PyTorch's `.grad` is `None`
    /// until then), so inference holds none; zeroGrad keeps it for the next step.
    @Test func gradientsAppearWithTheFirstBackward() throws {
        let net = try ResNet(.seresnet8, numClasses: 3, inChannels: 2, stem: .cifar, width: 16, seed: 5)
        let x = GradientCheck.random([3, 2, 8, 8], seed: 6)
        net.eval()
        _ = try withoutGradients { try net.forward(x) }
        net.train()
        let logits = try net.forward(x)
        net.zeroGrad()
        #expect(net.namedParameters().allSatisfy { $0.parameter.grad == nil })
        _ = try net.backward(GradientCheck.random(logits.shape, seed: 7))
        for (name, p) in net.namedParameters() {
            #expect(p.grad?.shape == p.value.shape, "\(name)")
        }
        net.zeroGrad()
        #expect(net.namedParameters().allSatisfy { $0.parameter.grad?.scalars.allSatisfy { $0 == 0 } == true })
    }

    @Test func modeIsScopedAndPerThread() throws {
        final class Flag: @unchecked Sendable { var value = false }
        #expect(GradientMode.isEnabled)
        let onAnotherThread = Flag()
        let (inside, nested) = withoutGradients {
            let done = DispatchSemaphore(value: 0)
            Thread {
                onAnotherThread.value = GradientMode.isEnabled
                done.signal()
            }.start()
            done.wait()
            return (GradientMode.isEnabled, withoutGradients { GradientMode.isEnabled })
        }
        #expect(!inside && !nested)
        #expect(onAnotherThread.value, "a thread started inside withoutGradients has gradients on")
        #expect(GradientMode.isEnabled)
        #expect(throws: BLASNetError.self) {
            try withoutGradients { () throws -> Void in throw BLASNetError.invalidArgument("thrown inside") }
        }
        #expect(GradientMode.isEnabled, "gradients are back on after a throw")
    }
}

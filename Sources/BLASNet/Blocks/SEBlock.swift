/// Squeeze-and-excitation (timm's `SEModule`): each channel is rescaled by a gate
/// computed from the global average of all channels.
///
/// `x: [C, N, H, W] -> y: [C, N, H, W]`; `fc1: [rd, C, 1, 1]` and `fc2: [C, rd, 1, 1]` with biases.
public final class SEBlock: Module {
    public let channels: Int
    public let fc1: Conv2d
    public let fc2: Conv2d
    private let relu = ReLU()
    private let gate = Sigmoid()
    private var input: Tensor?
    private var scale: Tensor?

    /// timm's `make_divisible(channels / 16, 8, round_limit=0)`: 64 → 8, 256 → 16, 2048 → 128.
    ///
    /// - Throws: ``BLASNetError/invalidArgument(_:)`` unless `channels` and `divisor` are
    ///   in 1...2³² and `ratio` is in (0, 1].
    public static func reducedChannels(_ channels: Int, ratio: Double = 1.0 / 16, divisor: Int = 8) throws -> Int {
        guard (1...(1 << 32)).contains(channels), (1...(1 << 32)).contains(divisor), ratio > 0, ratio <= 1 else {
            throw BLASNetError.invalidArgument(
                "SE width: need channels and divisor in 1...2³² and a ratio in (0, 1], got \(channels), \(divisor) and \(ratio)")
        }
        return max(divisor, Int(Double(channels) * ratio + Double(divisor) / 2) / divisor * divisor)
    }

    /// timm's SE module for `channels` channels: 1×1 convolutions to
    /// ``reducedChannels(_:ratio:divisor:)`` and back, initialized from `rng` as `nn.Conv2d`.
    public init(_ channels: Int, workspace: Workspace = Workspace(), rng: inout SeededGenerator) throws {
        self.channels = channels
        let rd = try Self.reducedChannels(channels)
        fc1 = try Conv2d(channels, rd, kernelSize: 1, bias: true, workspace: workspace, rng: &rng)
        fc2 = try Conv2d(rd, channels, kernelSize: 1, bias: true, workspace: workspace, rng: &rng)
    }

    public var children: [(name: String, module: any Module)] { [("fc1", fc1), ("fc2", fc2)] }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4, x.shape[0] == channels, x.shape[2] * x.shape[3] > 0 else {
            throw BLASNetError.shapeMismatch(layer: "SEBlock(\(channels))", expected: "[\(channels), N, H, W] with H·W > 0", got: x.shape)
        }
        // The squeeze, each plane's mean, shaped [C, N, 1, 1] for the 1×1 convolutions.
        var squeezed = Tensor(uninitializedShape: [channels, x.shape[1], 1, 1])
        x.withUnsafePointer { xp in
            squeezed.withUnsafeMutablePointer {
                Kernels.adaptiveAvgPool(xp, $0, channels: channels, batch: x.shape[1], height: x.shape[2], width: x.shape[3], grid: 1)
            }
        }
        let s = try gate.forward(fc2.forward(relu.forward(fc1.forward(squeezed))))
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in
            s.withUnsafePointer { sp in
                y.withUnsafeMutablePointer { Kernels.scalePlanes(xp, by: sp, $0, planes: s.count, planeSize: x.shape[2] * x.shape[3]) }
            }
        }
        (input, scale) = (x.keptForBackward, s.keptForBackward)
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input, let s = scale else { throw BLASNetError.backwardWithoutForward("SEBlock") }
        (input, scale) = (nil, nil)
        guard dy.shape == x.shape else { throw BLASNetError.shapeMismatch(layer: "SEBlock(\(channels)) backward", expected: "\(x.shape)", got: dy.shape) }
        let planes = s.count, planeSize = x.shape[2] * x.shape[3]
        // y = x·s: the direct path scales dy by s; the gate path sees ds = Σ_hw dy·x.
        var ds = Tensor(uninitializedShape: s.shape)
        dy.withUnsafePointer { g in
            x.withUnsafePointer { xp in ds.withUnsafeMutablePointer { Kernels.planeDots(g, xp, $0, planes: planes, planeSize: planeSize) } }
        }
        // The squeeze (a global mean) passes each plane's gradient back spread evenly over
        // it: dx = dy·s + dSqueezed/(H·W) in one pass, where AdaptiveAvgPool2d's backward would
        // write a second full-size tensor to add (two passes more over the activation).
        var spread = try fc1.backward(relu.backward(fc2.backward(gate.backward(ds))))
        spread.withUnsafeMutablePointer { p in
            for plane in 0..<planes { p[plane] /= Float(planeSize) }
        }
        var dx = Tensor(uninitializedShape: x.shape)
        dy.withUnsafePointer { g in
            s.withUnsafePointer { sp in
                spread.withUnsafePointer { shift in
                    dx.withUnsafeMutablePointer {
                        Kernels.planeAffine(g, $0, planes: planes, planeSize: planeSize, scale: sp, shift: shift, relu: false)
                    }
                }
            }
        }
        return dx
    }
}

extension SEBlock: SpatialModule {
    /// The spatial path only: each position is scaled by its channel's gate. The gate comes
    /// from a global average, so strictly every output depends on the whole input, but
    /// receptive fields describe where features are computed from, which is this path.
    public var spatialStructure: SpatialStructure { .pointwise }
}

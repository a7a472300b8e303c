/// A trainable tensor and its accumulated gradient.
public final class Parameter {
    /// Current value; ``assign(_:)`` replaces it with a tensor of the same shape (the
    /// layer's kernels read it by that shape).
    public package(set) var value: Tensor
    /// Gradient accumulated by `backward` since the last ``zeroGrad()``; same shape as `value`.
    ///
    /// `nil` until a backward pass reaches this parameter, as PyTorch's `.grad` is `None`:
    /// a model used only for inference, and a frozen layer, hold no gradient memory
    /// (100 MB for ResNet-50).
    public internal(set) var grad: Tensor?
    /// When false the layer skips this parameter's gradient and optimizers leave it alone.
    public var requiresGrad = true

    /// A trainable tensor holding `value`, with no gradient until the first backward pass.
    public init(_ value: Tensor) {
        self.value = value
    }

    /// Replaces ``value``; throws unless `newValue` has its shape.
    public func assign(_ newValue: Tensor) throws {
        guard newValue.shape == value.shape else {
            throw BLASNetError.shapeMismatch(layer: "Parameter.assign", expected: "\(value.shape)", got: newValue.shape)
        }
        value = newValue
    }

    /// The most elements a layer's parameter may have: 2³¹ floats, 8 GiB. Sizes past it
    /// (a class count or a channel count off by orders of magnitude) are refused before
    /// anything is allocated or multiplied out of `Int`'s range.
    public static let maximumCount = 1 << 31

    /// Throws unless a parameter of `shape` stays within ``maximumCount``.
    static func checkSize(_ shape: [Int], of layer: String) throws {
        guard let count = Tensor.elementCount(shape), count <= maximumCount else {
            throw BLASNetError.invalidArgument(
                "\(layer): a \(shape.map(String.init).joined(separator: "×")) parameter is more than \(maximumCount) elements")
        }
    }

    /// Runs `body` on the gradient's memory for accumulation, zeroed memory on first use.
    package func withGradient<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        if grad == nil { grad = Tensor(shape: value.shape) }
        return try grad!.withUnsafeMutablePointer(body)
    }

    /// Adds `gradient` (Float64 sums of a kernel) to ``grad``, unless gradients are off.
    func accumulate(_ gradient: [Double]) {
        guard requiresGrad else { return }
        withGradient { g in for (i, v) in gradient.enumerated() { g[i] += Float(v) } }
    }

    /// Resets the gradient to zero, keeping its memory for the next backward pass
    /// (PyTorch's `zero_grad(set_to_none=False)`).
    public func zeroGrad() {
        guard let count = grad?.count else { return }
        grad?.withUnsafeMutablePointer { $0.update(repeating: 0, count: count) }
    }
}

/// Element type a buffer has in a state dict (PyTorch keeps counters as int64).
public enum BufferKind: Sendable { case float, int64 }

/// A non-trainable tensor that is part of a model's state, such as `running_mean`.
public final class Buffer {
    /// Current value; ``assign(_:)`` replaces it with a tensor of the same shape.
    public package(set) var value: Tensor
    /// The dtype the buffer takes in a state_dict.
    public let kind: BufferKind

    /// A non-trainable state tensor holding `value`, saved in the state_dict as `kind`
    /// (PyTorch's `num_batches_tracked` is `.int64`).
    public init(_ value: Tensor, kind: BufferKind = .float) {
        self.value = value
        self.kind = kind
    }

    /// Replaces ``value``; throws unless `newValue` has its shape.
    public func assign(_ newValue: Tensor) throws {
        guard newValue.shape == value.shape else {
            throw BLASNetError.shapeMismatch(layer: "Buffer.assign", expected: "\(value.shape)", got: newValue.shape)
        }
        value = newValue
    }
}

/// A network piece with a forward pass, its backward pass and PyTorch-named state.
///
/// `forward` caches what `backward` needs; `backward` takes the gradient of the loss
/// with respect to the output, *adds* parameter gradients into `Parameter.grad`, and
/// returns the gradient with respect to the input.
public protocol Module: AnyObject {
    func forward(_ x: Tensor) throws -> Tensor
    func backward(_ dy: Tensor) throws -> Tensor
    /// Sub-modules, named as the components of PyTorch state_dict keys.
    var children: [(name: String, module: any Module)] { get }
    /// This module's own parameters (not its children's).
    var localParameters: [(name: String, parameter: Parameter)] { get }
    /// This module's own buffers (not its children's).
    var localBuffers: [(name: String, buffer: Buffer)] { get }
    /// Switches between training (batch statistics) and inference behaviour, recursively.
    func setTraining(_ training: Bool)
}

extension Module {
    public var children: [(name: String, module: any Module)] { [] }
    public var localParameters: [(name: String, parameter: Parameter)] { [] }
    public var localBuffers: [(name: String, buffer: Buffer)] { [] }

    public func setTraining(_ training: Bool) {
        for child in children { child.module.setTraining(training) }
    }

    /// Every parameter of this module and its descendants, in state_dict order (what an
    /// optimizer takes, as `model.parameters()`).
    public func parameters() -> [Parameter] { namedParameters().map(\.parameter) }

    /// Every parameter of this module and its descendants, by state_dict key.
    public func namedParameters(prefix: String = "") -> [(name: String, parameter: Parameter)] {
        localParameters.map { (prefix + $0.name, $0.parameter) }
            + children.flatMap { $0.module.namedParameters(prefix: prefix + $0.name + ".") }
    }

    /// Every buffer of this module and its descendants, by state_dict key.
    public func namedBuffers(prefix: String = "") -> [(name: String, buffer: Buffer)] {
        localBuffers.map { (prefix + $0.name, $0.buffer) }
            + children.flatMap { $0.module.namedBuffers(prefix: prefix + $0.name + ".") }
    }

    /// Zeroes every parameter gradient (once per step: no state_dict names are built).
    public func zeroGrad() {
        for (_, p) in localParameters { p.zeroGrad() }
        for child in children { child.module.zeroGrad() }
    }

    /// Training mode: BatchNorm uses and updates batch statistics.
    public func train() { setTraining(true) }
    /// Inference mode: BatchNorm uses its running statistics.
    public func eval() { setTraining(false) }
}

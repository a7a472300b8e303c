import Foundation

/// Whether forward passes on this thread keep what their backward pass needs, like
/// PyTorch's grad mode (`torch.is_grad_enabled()`).
///
/// On by default. ``withoutGradients(_:)`` turns it off for inference: a layer then keeps
/// neither its input nor its output tensors (only small bookkeeping, such as a max-pool's
/// winning positions), so each activation's memory goes back to the pool as
/// soon as the next layer has read it, instead of the whole network's activations staying
/// alive until the next forward pass. Modules of your own can read ``isEnabled`` to do the same.
public enum GradientMode {
    /// False inside ``withoutGradients(_:)`` on the calling thread.
    public static var isEnabled: Bool { pthread_getspecific(key) == nil }

    /// A pthread key, as ``LayerObservers/current``: read on every layer call, without allocating.
    /// Any non-nil value means "off".
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    fileprivate static func set(_ enabled: Bool) {
        pthread_setspecific(key, enabled ? nil : UnsafeRawPointer(bitPattern: 1))
    }
}

/// Runs `body` with ``GradientMode`` off on this thread, as PyTorch's `torch.no_grad()`:
/// for inference, evaluation and feature extraction. The results are the same; layers
/// keep no tensors for a backward pass, so peak memory is a few activations rather than
/// all of them, and a model's `backward` after such a forward throws.
///
/// ```swift
/// net.eval()
/// let logits = try withoutGradients { try net.forward(images) }
/// ```
public func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
    let outer = GradientMode.isEnabled
    GradientMode.set(false)
    defer { GradientMode.set(outer) }
    return try body()
}

extension Tensor {
    /// This tensor while ``GradientMode`` is on, else nil: what a layer keeps for its backward pass.
    var keptForBackward: Tensor? { GradientMode.isEnabled ? self : nil }
}

extension BLASNetError {
    /// `layer`'s backward pass found nothing kept by a forward pass to differentiate.
    static func backwardWithoutForward(_ layer: String) -> BLASNetError {
        .invalidArgument("\(layer): backward called without a forward pass to differentiate "
                         + "(none since the last backward, or it ran inside withoutGradients)")
    }
}

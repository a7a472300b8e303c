import Foundation

/// Something that sees every layer call on the thread where it is installed, as
/// PyTorch's module hooks do: the ``Profiler`` times them, the non-finite check finds the
/// first one whose result is not finite, data-parallel training starts averaging a
/// layer's gradients as soon as its backward pass has produced them.
///
/// Containers call their children through ``Module/observedForward(_:)`` and
/// ``Module/observedBackward(_:)``; while no observer is installed those cost one nil check.
public protocol LayerObserver: AnyObject {
    /// Runs one layer call (`body`, the forward or backward pass of `module`) and returns its result.
    func observe(_ module: any Module, backward: Bool, _ body: () throws -> Tensor) throws -> Tensor
}

/// Where the calling thread's ``LayerObserver`` is installed.
public enum LayerObservers {
    /// The observer installed on the calling thread. Per thread, so that models running
    /// on other threads at the same time (parallel tests, a data-loading thread) are
    /// neither seen by it nor racing on its records.
    ///
    /// Read on every layer call, so it lives in a pthread key: reading it allocates
    /// nothing (Foundation's `threadDictionary` boxes the key and the value on each lookup).
    static var current: (any LayerObserver)? {
        get { pthread_getspecific(key).map { Unmanaged<Slot>.fromOpaque($0).takeUnretainedValue().observer } }
        set {
            if let old = pthread_getspecific(key) { Unmanaged<Slot>.fromOpaque(old).release() }
            pthread_setspecific(key, newValue.map { Unmanaged.passRetained(Slot($0)).toOpaque() })
        }
    }

    private final class Slot {
        let observer: any LayerObserver
        init(_ observer: any LayerObserver) { self.observer = observer }
    }

    /// Releases a thread's slot when the thread ends.
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { $0.map { Unmanaged<Slot>.fromOpaque($0).release() } }
        return key
    }()

    /// Runs `body` with `observer` installed on this thread (in place of any other).
    public static func run<R>(_ observer: any LayerObserver, _ body: () throws -> R) rethrows -> R {
        let outer = current
        current = observer
        defer { current = outer }
        return try body()
    }
}

/// Names for a model's layers in reports: the state_dict path of every module the model
/// lists as a child, and for layers a container keeps privately (its ReLU, pooling) the
/// container's name and the layer's kind.
struct LayerNames {
    private var names: [ObjectIdentifier: String] = [:]

    init(_ model: any Module) {
        func walk(_ m: any Module, _ path: String) {
            names[ObjectIdentifier(m)] = path.isEmpty ? "(model)" : path
            for child in m.children { walk(child.module, path.isEmpty ? child.name : path + "." + child.name) }
        }
        walk(model, "")
    }

    /// `module`'s name and kind; `owner` is the name of the layer whose call it runs inside.
    func label(_ module: any Module, owner: String?) -> (name: String, kind: String) {
        let kind = String(describing: type(of: module))
        if let name = names[ObjectIdentifier(module)] { return (name, kind) }
        return ((owner.map { $0 + "." } ?? "") + kind.lowercased(), kind)
    }
}

extension Module {
    /// `forward` through the installed ``LayerObserver``; containers call their children this way.
    public func observedForward(_ x: Tensor) throws -> Tensor {
        guard let observer = LayerObservers.current else { return try forward(x) }
        return try observer.observe(self, backward: false) { try forward(x) }
    }

    /// `backward` through the installed ``LayerObserver``; containers call their children this way.
    public func observedBackward(_ dy: Tensor) throws -> Tensor {
        guard let observer = LayerObservers.current else { return try backward(dy) }
        return try observer.observe(self, backward: true) { try backward(dy) }
    }
}

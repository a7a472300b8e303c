/// Updates parameters from their gradients, one ``step()`` at a time.
///
/// Only parameters with `requiresGrad` are updated, and only they gain optimizer state:
/// like PyTorch, where a frozen parameter has no gradient, each parameter's state starts
/// at its own first update.
///
/// The state is checkpointable: ``stateTensors()`` names every tensor
/// `optimizer.<buffer>.<parameter index>`, so it can be stored next to a model's
/// ``Module/stateDict()`` in one safetensors file, with ``stepCount`` in its metadata.
/// ``loadState(_:stepCount:)`` on an optimizer built with the same hyperparameters over
/// the same parameter list then continues exactly where the saved one stopped.
public protocol Optimizer: AnyObject {
    /// The parameters this optimizer updates; state tensors are keyed by index into this list.
    var parameters: [Parameter] { get }
    /// Rate of the next ``step()``; set it from a ``LearningRateSchedule`` before each step.
    var learningRate: Float { get set }
    /// Number of ``step()`` calls so far, including those before a ``loadState(_:stepCount:)``.
    var stepCount: Int { get }
    /// Applies one update to every parameter that requires a gradient.
    func step()
    /// Every state tensor, keyed `optimizer.<buffer>.<parameter index>`; copies share memory until written.
    func stateTensors() -> [String: Tensor]
    /// Replaces the state with `tensors` (as ``stateTensors()`` returned them) and ``stepCount`` with `stepCount`.
    ///
    /// Keys outside `optimizer.` are ignored, so a whole checkpoint can be passed. A
    /// parameter without state keys has never been updated. Throws, changing nothing,
    /// on an unknown key, a wrong shape, or a parameter with only part of its state.
    func loadState(_ tensors: [String: Tensor], stepCount: Int) throws
}

extension Optimizer {
    /// Zeroes the gradients of ``parameters`` in place, as PyTorch's
    /// `optimizer.zero_grad(set_to_none=False)` (since torch 2.0 the default sets them to
    /// None instead; the next step's gradients are the same either way): once per step,
    /// over the list the optimizer already holds.
    public func zeroGrad() {
        for p in parameters { p.zeroGrad() }
    }

    /// Sets ``learningRate`` to `schedule`'s rate for this step (``stepCount``), then steps.
    ///
    /// Schedules depend on the step index alone, so after ``loadState(_:stepCount:)`` this
    /// resumes the schedule too.
    public func step(following schedule: LearningRateSchedule) {
        learningRate = schedule.learningRate(at: stepCount)
        step()
    }
}

/// The checkpoint layout of an optimizer's per-parameter state: which buffers an updated
/// parameter has, and how they are named.
struct OptimizerStateLayout {
    /// Names the messages use, such as "AdamW".
    let optimizer: String
    /// Buffers every updated parameter has; each has the parameter's shape unless in `scalars`.
    let buffers: [String]
    /// Buffers of shape `[]`.
    var scalars: Set<String> = []

    static let prefix = "optimizer."

    static func key(_ buffer: String, _ index: Int) -> String { "\(prefix)\(buffer).\(index)" }

    /// The `optimizer.` entries of `tensors`, grouped by parameter index (nil for a
    /// parameter without state) after checking names, shapes and completeness.
    func parse(_ tensors: [String: Tensor], parameters: [Parameter], stepCount: Int) throws -> [[String: Tensor]?] {
        // PyTorch keeps step counts as floats, exact up to 2⁵³; past that, and near
        // Int.max where the next step overflows, a count is damage, not progress.
        guard (0...(1 << 53)).contains(stepCount) else {
            throw BLASNetError.invalidArgument("\(optimizer) state: step count \(stepCount) is not in 0...2⁵³")
        }
        var grouped = [[String: Tensor]](repeating: [:], count: parameters.count)
        var problems: [String] = []
        for (key, tensor) in tensors.sorted(by: { $0.key < $1.key }) where key.hasPrefix(Self.prefix) {
            let path = key.dropFirst(Self.prefix.count)
            guard let dot = path.lastIndex(of: "."), let index = Int(path[path.index(after: dot)...]),
                  parameters.indices.contains(index), buffers.contains(String(path[..<dot])) else {
                problems.append("unexpected key \(key)")
                continue
            }
            let buffer = String(path[..<dot])
            let shape = scalars.contains(buffer) ? [] : parameters[index].value.shape
            guard tensor.shape == shape else {
                problems.append("\(key) has shape \(tensor.shape), expected \(shape)")
                continue
            }
            grouped[index][buffer] = tensor
        }
        for (index, state) in grouped.enumerated() where !state.isEmpty && state.count != buffers.count {
            let missing = buffers.filter { state[$0] == nil }.map { Self.key($0, index) }
            problems.append("parameter \(index) lacks \(missing.joined(separator: ", "))")
        }
        guard problems.isEmpty else {
            throw BLASNetError.invalidArgument("\(optimizer) state: " + problems.joined(separator: "; "))
        }
        return grouped.map { $0.isEmpty ? nil : $0 }
    }
}

/// What ``Module/loadStateDict(_:strict:)`` found, as PyTorch's `load_state_dict` reports it.
public struct LoadReport: Sendable, Equatable {
    /// Model keys the file lacks (left at their current values).
    public var missingKeys: [String]
    /// File keys the model does not have (ignored).
    public var unexpectedKeys: [String]
}

extension Module {
    /// Parameters and buffers by PyTorch state_dict name; counters as I64, the rest F32.
    public func stateDict() -> [(name: String, tensor: SafeTensor)] {
        namedParameters().map { ($0.name, SafeTensor($0.parameter.value)) }
            + namedBuffers().map { name, buffer in
                switch buffer.kind {
                case .float: (name, SafeTensor(buffer.value))
                // loadStateDict takes only counts; a value set by hand that is none is written as 0, not trapped
                // on, and int64 max, which rounds up to 2⁶³ in Float32, stays int64 max.
                case .int64: (name, SafeTensor(uncheckedInt64s: buffer.value.scalars.map { $0 >= 0x1p63 ? .max : Int64(exactly: $0) ?? 0 },
                                               shape: buffer.value.shape))
                }
            }
    }

    /// Copies parameters and buffers from `file` (any numeric dtype, converted to Float32).
    ///
    /// A tensor whose shape differs from the model's is always an error. With `strict`
    /// (the default) a missing or unexpected key is an error too; `num_batches_tracked`
    /// may be absent, as in files written by older PyTorch versions, and must hold a count
    /// (a whole number from 0 to 2⁶³ − 1) when present; BLASNet keeps it in Float32, so a
    /// count past 2²⁴ is rounded (PyTorch reads it only for BatchNorm's `momentum=None`).
    /// Nothing is changed unless the whole load succeeds.
    @discardableResult
    public func loadStateDict(_ file: SafeTensorsFile, strict: Bool = true) throws -> LoadReport {
        var slots: [String: (shape: [Int], isCounter: Bool, assign: (Tensor) -> Void)] = [:]
        var order: [String] = []
        for (name, p) in namedParameters() {
            slots[name] = (p.value.shape, false, { p.value = $0 })
            order.append(name)
        }
        for (name, b) in namedBuffers() {
            slots[name] = (b.value.shape, b.kind == .int64, { b.value = $0 })
            order.append(name)
        }
        let present = Set(file.tensors.map(\.name))
        let missing = order.filter { !present.contains($0) }
        let unexpected = file.tensors.map(\.name).filter { slots[$0] == nil }
        let wrongShape = file.tensors.compactMap { name, t -> String? in
            guard let slot = slots[name], slot.shape != t.shape else { return nil }
            return "\(name): file \(t.shape), model \(slot.shape)"
        }
        let strictMissing = missing.filter { !$0.hasSuffix("num_batches_tracked") }
        if !wrongShape.isEmpty || (strict && (!strictMissing.isEmpty || !unexpected.isEmpty)) {
            throw BLASNetError.stateDictMismatch(missing: strict ? strictMissing : [], unexpected: strict ? unexpected : [],
                                                 wrongShape: wrongShape)
        }
        for (name, t) in file.tensors where slots[name]?.isCounter == true {
            // Integer dtypes are read exactly (int64 max is no Float32); a float must be whole.
            let bad = (try? t.integers()).map { $0.first { $0 < 0 }.map(String.init) }
                ?? t.floats().scalars.first { Int64(exactly: $0).map { $0 < 0 } ?? true }.map { "\($0)" }
            if let bad { throw BLASNetError.invalidArgument("state dict: \(name) holds \(bad), which is not a count") }
        }
        for (name, t) in file.tensors {
            slots[name]?.assign(t.floats())
        }
        return LoadReport(missingKeys: missing, unexpectedKeys: unexpected)
    }
}

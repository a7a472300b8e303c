/// Every error BLASNet throws; `description` is a one-line message for people.
public enum BLASNetError: Error, CustomStringConvertible, Equatable {
    /// A layer got an input whose shape it cannot take.
    case shapeMismatch(layer: String, expected: String, got: [Int])
    /// An argument is out of its domain (negative size, unknown name, …).
    case invalidArgument(String)
    /// A file (safetensors, IDX, CIFAR batch, …) is malformed; the message says where.
    case malformedFile(path: String, reason: String)
    /// A dataset's files are not where they were looked for; `hint` says how to get them.
    case datasetMissing(dataset: String, lookedFor: String, hint: String)
    /// A state dict does not fit the model.
    case stateDictMismatch(missing: [String], unexpected: [String], wrongShape: [String])
    /// Reading or writing a file failed.
    case io(String)
    /// Training step `step` of epoch `epoch` (both 1-based) produced a loss or gradient that
    /// is not finite; `location` is where such a value first appeared. No weight was updated.
    case nonFinite(epoch: Int, step: Int, location: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(layer, expected, got):
            return "\(layer): expected input \(expected), got \(got)"
        case let .invalidArgument(message):
            return message
        case let .malformedFile(path, reason):
            return "\(path): \(reason)"
        case let .datasetMissing(dataset, lookedFor, hint):
            return "\(dataset) not found: looked for \(lookedFor); \(hint)"
        case let .stateDictMismatch(missing, unexpected, wrongShape):
            // A file of another kind misses every key: the first few say as much as a screenful.
            func some(_ items: [String], _ separator: String) -> String {
                items.prefix(8).joined(separator: separator) + (items.count > 8 ? "\(separator)… (\(items.count) in all)" : "")
            }
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing keys: \(some(missing, ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected keys: \(some(unexpected, ", "))") }
            if !wrongShape.isEmpty { parts.append("wrong shapes: \(some(wrongShape, "; "))") }
            return "state dict does not fit the model: " + parts.joined(separator: "; ")
        case let .io(message):
            return message
        case let .nonFinite(epoch, step, location):
            return "epoch \(epoch), step \(step): the loss or a gradient is not finite, first in \(location); the step was not applied"
        }
    }
}

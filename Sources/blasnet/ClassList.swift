import ArgumentParser
import Foundation

/// `0-4` or `5,6,7`: the classes a run keeps.
struct ClassList: ExpressibleByArgument {
    let values: [Int]

    /// Parses a range or a list, saying what is wrong with anything else.
    init(parsing argument: String) throws {
        let bounds = argument.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        if bounds.count == 2, let low = bounds[0], let high = bounds[1] {
            guard low <= high else { throw ValidationError("a range goes up, as 0-4") }
            // A range longer than any label set is a typo, and would be built as an array.
            guard high - low < 1 << 16 else { throw ValidationError("a range of more than 65536 classes") }
            values = Array(low...high)
        } else {
            let list = argument.split(separator: ",", omittingEmptySubsequences: false)
                .map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard list.allSatisfy({ $0 != nil }) else {
                throw ValidationError("expected a list (5,6,7) or a range (0-4) of class indices")
            }
            values = list.map { $0! }
        }
    }

    init?(argument: String) {
        guard let parsed = try? ClassList(parsing: argument) else { return nil }
        self = parsed
    }
}

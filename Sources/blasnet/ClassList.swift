import ArgumentParser

/// `0-4` or `5,6,7`: the classes a run keeps.
struct ClassList: ExpressibleByArgument {
    let values: [Int]

    init?(argument: String) {
        let bounds = argument.split(separator: "-").compactMap { Int($0) }
        // A range longer than any label set is a typo, and would be built as an array.
        if bounds.count == 2, !argument.contains(","), bounds[0] <= bounds[1], bounds[0] >= 0, bounds[1] - bounds[0] < 1 << 16 {
            values = Array(bounds[0]...bounds[1])
        } else {
            let list = argument.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !list.isEmpty, list.count == argument.split(separator: ",").count else { return nil }
            values = list
        }
    }
}

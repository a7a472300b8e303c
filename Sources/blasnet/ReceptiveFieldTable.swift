import ArgumentParser
import BLASNet
import Foundation

/// The receptive field after every layer of a model, from its structure alone.
struct ReceptiveFieldTable: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receptive-field",
        abstract: "Print each layer's output size, jump, receptive-field size and start.",
        discussion: """
            Per layer in data-flow order, by state_dict name: the output size; the jump (input \
            pixels between neighbouring outputs); the receptive-field size (input pixels one \
            output sees, padding included); and start, the input coordinate of the centre of the \
            first output's field (pixel i's centre is at i). A residual block's own row holds both \
            of its paths' fields: in a ResNet the branch's, which is the larger. \
            Squeeze-and-excitation counts as pointwise: the table follows the spatial path, \
            although the SE gate, a global average, makes every output depend on the whole input. \
            After global average pooling the field covers the whole input. Values are given per \
            axis as h×w, or once where both axes agree; with --json every value is an [h, w] pair.
            """
    )

    @OptionGroup var model: ModelOptions

    @Option(parsing: .upToNextOption, help: "Input height and width.")
    var input: [Int] = [224, 224]

    @Flag(help: "Print a JSON list of {name, output_size, jump, size, start}, each value an [h, w] pair.")
    var json = false

    func validate() throws {
        try ModelOptions.check(input: input)
    }

    func run() throws {
        // Fields depend on the layers' windows alone: the narrowest model with a one-class
        // head and BatchNorm has them, without the memory the flags' weights would take.
        let skeleton = try ResNet(model.arch, numClasses: 1, inChannels: 1, stem: model.stem, width: 1, headGrid: model.headGrid ?? 1)
        let rows = try skeleton.receptiveFields(inputSize: (input[0], input[1])).map(Row.init)
        if json {
            // An object a line: a table stays readable as JSON.
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let lines = try rows.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
            print("[\n" + lines.joined(separator: ",\n") + "\n]")
        } else {
            let width = max(5, rows.map(\.name.count).max() ?? 0) + 2
            print("layer".padding(toLength: width, withPad: " ", startingAt: 0) + "output     jump       size       start")
            for row in rows {
                let columns = [row.output_size, row.jump, row.size].map { Self.pair($0.map(String.init)) }
                    + [Self.pair(row.start.map(Self.coordinate))]
                print(row.name.padding(toLength: width, withPad: " ", startingAt: 0)
                      + columns.map { $0.padding(toLength: 11, withPad: " ", startingAt: 0) }.joined().trimmingCharacters(in: .whitespaces))
            }
        }
    }

    /// One value where both axes agree, else `h×w`.
    private static func pair(_ values: [String]) -> String {
        values[0] == values[1] ? values[0] : values.joined(separator: "×")
    }

    /// A coordinate, without a trailing `.0` when it is whole.
    private static func coordinate(_ x: Double) -> String {
        x == x.rounded() ? String(Int(x)) : String(x)
    }

    /// One layer as printed; field names are the JSON keys.
    struct Row: Encodable {
        var name: String
        var output_size: [Int]
        var jump: [Int]
        var size: [Int]
        var start: [Double]

        init(_ layer: (name: String, field: ReceptiveField)) {
            let (h, w) = (layer.field.height, layer.field.width)
            name = layer.name
            output_size = [h.outputSize, w.outputSize]
            jump = [h.jump, w.jump]
            size = [h.size, w.size]
            start = [h.start, w.start]
        }
    }
}

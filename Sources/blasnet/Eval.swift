import ArgumentParser
import BLASNet
import Foundation

/// Accuracy, per-class accuracy and confusion matrix of saved weights on a test split.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate weights on a dataset's test split: accuracy, per-class accuracy, confusion matrix.",
        discussion: """
            A checkpoint from `blasnet train` carries its architecture, norm layers, dataset and input \
            normalization. For other weights (a PyTorch state_dict saved as safetensors) give --arch, \
            --width, --stem and --norm; the input normalization is then computed from the training split. \
            Weights trained on some classes (`train --classes`, `finetune --classes`) are evaluated on \
            those classes' test images.
            """
    )

    @Option(help: "Weights (.safetensors): a `blasnet train` checkpoint or a state_dict.")
    var weights: String

    @OptionGroup var shape: RecordedModelOptions
    @OptionGroup var normalization: InputNormalizationOptions

    @Option(help: "Dataset (default: the checkpoint's, else fashion-mnist); another than the checkpoint's is scored with the checkpoint's input normalization, unless --mean and --std are given.")
    var dataset: DatasetName?

    @Option(help: "Only these classes, in the order of the weights' outputs, when the file does not record them (default: all).",
            transform: ClassList.init(parsing:))
    var classes: ClassList?

    @Option(help: "Directory holding the dataset's files.")
    var data: String?

    @Option(parsing: .unconditional, help: "Images per forward pass.")
    var batchSize = 500

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
    }

    func run() throws {
        compute.apply()
        let file = try SafeTensorsFile(contentsOf: weights)
        let meta = file.metadata
        let datasetName = try dataset ?? meta["dataset"].map {
            guard let name = DatasetName(rawValue: $0) else { throw BLASNetError.malformedFile(path: weights, reason: "unknown dataset '\($0)' in metadata") }
            return name
        } ?? .fashionMNIST
        let (arch, width, stem, norm, headGrid) = try shape.resolve(file, path: weights)
        let directory = data.map { URL(fileURLWithPath: $0) }
        var testSet = try ImageDataset.load(datasetName, split: .test, directory: directory)
        let recordedClasses = try meta["classes"].flatMap { text -> ClassList? in
            guard !text.isEmpty else { return nil }
            guard let list = ClassList(argument: text) else {
                throw BLASNetError.malformedFile(path: weights, reason: "its metadata classes '\(text)' is not a class list")
            }
            return list
        }
        // The head's outputs are the recorded classes: any other list would score them against other labels.
        if let classes, let recordedClasses, classes.values != recordedClasses.values {
            throw ValidationError("--classes contradicts \(weights), whose head was trained on classes \(meta["classes"]!)")
        }
        if let subset = classes ?? recordedClasses { testSet = try testSet.selecting(classes: subset.values) }
        let (mean, std) = try normalization.resolve(channels: testSet.channels, metadata: meta, path: weights) {
            // As train computes them: over the training images of the classes kept.
            let trainSet = try ImageDataset.load(datasetName, split: .train, directory: directory)
            return try (classes ?? recordedClasses).map { try trainSet.selecting(classes: $0.values) }.map { try $0.channelStatistics() }
                ?? trainSet.channelStatistics()
        }
        if let outputs = file["fc.weight"]?.shape.first, outputs != testSet.numClasses {
            let hint = classes == nil ? "pass --classes to name the classes it was trained on"
                : "--classes \(classes!.values.map(String.init).joined(separator: ",")) names \(classes!.values.count); name the \(outputs) it was trained on"
            throw ValidationError("\(weights) has \(outputs) outputs but the \(datasetName.rawValue) test split has "
                                  + "\(testSet.numClasses) classes; \(hint)")
        }
        let model = try ResNet(arch, numClasses: testSet.numClasses, inChannels: testSet.channels,
                               stem: stem, width: width, norm: norm,
                               headGrid: headGrid, seed: 0)
        try model.loadStateDict(file.withoutOptimizerState)
        try RecordedModelOptions.checkUsable(model, from: weights)
        compute.configure(model)
        let loader = try DataLoader(dataset: testSet, batchSize: batchSize, shuffle: false, seed: 0, mean: mean, std: std)
        let result = try Trainer.evaluate(model, on: loader, numClasses: testSet.numClasses)
        print(String(format: "%@ on %@ test split (%d images): accuracy %.2f%%, loss %.4f",
                     arch.rawValue, datasetName.rawValue, testSet.count, result.accuracy * 100, result.loss))
        printPerClass(result, names: testSet.classNames)
    }

    private func printPerClass(_ result: Evaluation, names: [String]) {
        let nameWidth = max(names.map(\.count).max() ?? 0, 5) + 3
        print("\n" + "class".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  accuracy")
        for (name, accuracy) in zip(names, result.perClassAccuracy) {
            print(name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + String(format: "  %6.2f%%", accuracy * 100))
        }
        let cell = max(String(result.confusion.flatMap { $0 }.max() ?? 0).count, 3) + 1
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        print(String(repeating: " ", count: nameWidth)
              + names.indices.map { String($0).leftPadded(to: cell) }.joined())
        for (index, row) in result.confusion.enumerated() {
            let label = "\(index) \(names[index])".padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            print(label + row.map { String($0).leftPadded(to: cell) }.joined())
        }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: " ", count: max(width - count, 0)) + self
    }
}

import ArgumentParser
import BLASNet

/// One forward (and with `--train`, backward) pass on a batch from a file, so the
/// results can be compared with any other framework.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one forward (and optionally backward) pass on a batch from a safetensors file.",
        discussion: """
            INPUT holds `input` (F32 [N, C, H, W]) and, with --train, `target` (I64 [N]).
            OUTPUT receives `logits`; with --train (training mode and the --loss) also `loss`, \
            `grad.<name>` for every parameter and each BatchNorm's updated `running_mean` / `running_var`.
            """
    )

    @OptionGroup var model: ModelOptions
    @OptionGroup var compute: ComputeOptions

    @Option(help: "Weights by PyTorch state_dict name (.safetensors).")
    var weights: String

    @Option(help: "Batch to run (.safetensors with `input`, and `target` for --train).")
    var input: String

    @Option(help: "Where to write the results (.safetensors); written only on success.")
    var output: String

    @Flag(help: "Training mode: batch statistics, loss, gradients, running-statistics update.")
    var train = false

    @OptionGroup var loss: LossOptions

    func validate() throws {
        try OutputDirectory.checkNotAnInput(output, flag: "--output", inputs: [("--weights", weights), ("--input", input)])
    }

    func run() throws {
        let lossName = loss.loss ?? .crossEntropy
        try loss.checkFocalOptions(for: lossName)
        let lossFunction = try LossOptions.make(lossName, focalGamma: loss.focalGamma, focalAlpha: loss.focalAlpha,
                                                labelSmoothing: 0)
        compute.apply()
        let net = try model.makeModel(loading: SafeTensorsFile(contentsOf: weights), path: weights)
        compute.configure(net)
        let batch = try SafeTensorsFile(contentsOf: input)
        guard let x = batch["input"] else { throw BLASNetError.invalidArgument("\(input): no tensor named 'input'") }
        var results: [(name: String, tensor: SafeTensor)] = []
        if train {
            guard let target = batch["target"] else {
                throw BLASNetError.invalidArgument("\(input): --train needs a tensor named 'target' (I64 [N])")
            }
            guard let targets = try? target.integers().map({ Int($0) }) else {
                throw BLASNetError.invalidArgument("\(input): 'target' must hold integer class indices (I64 [N]), got \(target.dtype.rawValue)")
            }
            guard target.shape == [targets.count] else {
                throw BLASNetError.invalidArgument("\(input): 'target' must have shape [N], got \(target.shape)")
            }
            net.train()
            let logits = try net.forward(x.floats())
            let (value, gradient) = try lossFunction(logits, targets: targets)
            _ = try net.backward(gradient)
            results.append(("logits", SafeTensor(logits)))
            results.append(("loss", SafeTensor(Tensor(scalar: value))))
            results += net.namedParameters().compactMap { p in p.parameter.grad.map { ("grad." + p.name, SafeTensor($0)) } }
            results += net.namedBuffers().filter { $0.buffer.kind == .float }.map { ($0.name, SafeTensor($0.buffer.value)) }
        } else {
            net.eval()
            results.append(("logits", SafeTensor(try withoutGradients { try net.forward(x.floats()) })))
        }
        try SafeTensorsFile(tensors: results, metadata: ["arch": model.arch.rawValue, "norm": net.normalization.description]).write(to: output)
    }
}

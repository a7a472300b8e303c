import Foundation
import Testing
@testable import BLASNet

/// `blasnet run` end to end: the built executable on files in a temporary directory.
@Suite(.serialized)
struct RunCommandTests {
    /// The `blasnet` executable SwiftPM built next to the test bundle.
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("blasnet")
    }

    /// Seconds a child process may run; the slowest, under AddressSanitizer, take about a minute.
    static let childTimeLimit = 900

    /// Runs `blasnet` to completion; its output goes through files, which cannot fill up
    /// and stall the child the way an unread pipe can.
    /// A process killed by a signal gets the shell's status for it, 128 + the signal.
    static func run(_ arguments: [String], environment: [String: String] = [:], program: URL = executable,
                    in directory: URL? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let capture = FileManager.default.temporaryDirectory.appendingPathComponent("blasnet-capture-\(UUID().uuidString)")
        let (outURL, errURL) = (capture.appendingPathExtension("out"), capture.appendingPathExtension("err"))
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { for url in [outURL, errURL] { try? FileManager.default.removeItem(at: url) } }
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
        // A child that hangs (a stuck MPI rank, say) fails its test instead of the whole run.
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(childTimeLimit), execute: watchdog)
        process.waitUntilExit()
        watchdog.cancel()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        var stderr = try String(contentsOf: errURL, encoding: .utf8)
        if status == 128 + SIGKILL { stderr += "\n(killed: still running after \(childTimeLimit) s)" }
        return (status, try String(contentsOf: outURL, encoding: .utf8), stderr)
    }

    let dir: URL
    let weights: String, input: String, output: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("blasnet-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        weights = dir.appendingPathComponent("w.safetensors").path
        input = dir.appendingPathComponent("x.safetensors").path
        output = dir.appendingPathComponent("out.safetensors").path
        let fixture = try PyTorchParityTests.Fixture("seresnet18_cifar")
        let model = try ResNet(.seresnet18, numClasses: 10, stem: .cifar)
        FixtureWeights.load(into: model, seed: fixture.seed)
        try SafeTensorsFile(tensors: model.stateDict()).write(to: weights)
        try SafeTensorsFile(tensors: [("input", fixture.file["input"]!), ("target", fixture.file["target"]!)]).write(to: input)
    }

    var base: [String] {
        ["run", "--arch", "seresnet18", "--num-classes", "10", "--stem", "cifar", "--weights", weights, "--input", input, "--output", output]
    }

    @Test func trainingRunMatchesPyTorch() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let result = try Self.run(base + ["--train"])
        #expect(result.status == 0, "\(result.stderr)")
        let out = try SafeTensorsFile(contentsOf: output)
        let fixture = try PyTorchParityTests.Fixture("seresnet18_cifar")
        try fixture.expectClose(try #require(out["logits"]).floats(), "train.logits", floor: PyTorchParityTests.outputFloor)
        try fixture.expectClose(try #require(out["loss"]).floats(), "train.loss", floor: PyTorchParityTests.outputFloor)
        try fixture.expectClose(try #require(out["grad.layer1.0.se.fc1.weight"]).floats(), "train.grad.layer1.0.se.fc1.weight",
                                floor: PyTorchParityTests.gradientFloor)
        try fixture.expectClose(try #require(out["layer3.1.bn2.running_var"]).floats(), "train.layer3.1.bn2.running_var",
                                floor: PyTorchParityTests.outputFloor)
        #expect(out["grad.fc.bias"] != nil)
        let inference = try Self.run(base)
        #expect(inference.status == 0, "\(inference.stderr)")
        try fixture.expectClose(try #require(SafeTensorsFile(contentsOf: output)["logits"]).floats(), "eval.logits",
                                floor: PyTorchParityTests.outputFloor)
    }

    /// `--conv-algorithm` reaches every convolution: F(4×4, 3×3) still matches PyTorch,
    /// yet rounds differently from the default's F(2×2, 3×3) (were the flag dropped, the
    /// two runs would agree bit for bit); an unknown algorithm is refused by name.
    @Test func convolutionAlgorithmFlag() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixture = try PyTorchParityTests.Fixture("seresnet18_cifar")
        var logits: [[Float]] = []
        for algorithm in ["automatic", "winograd4x4"] {
            let result = try Self.run(base + ["--train", "--conv-algorithm", algorithm])
            #expect(result.status == 0, "\(result.stderr)")
            let out = try SafeTensorsFile(contentsOf: output)
            let y = try #require(out["logits"]).floats()
            try fixture.expectClose(y, "train.logits", floor: PyTorchParityTests.outputFloor)
            try fixture.expectClose(try #require(out["grad.layer1.0.conv2.weight"]).floats(), "train.gradsample.layer1.0.conv2.weight",
                                    floor: PyTorchParityTests.gradientFloor)
            logits.append(y.scalars)
        }
        #expect(logits[0] != logits[1])
        let bad = try Self.run(base + ["--conv-algorithm", "fast"])
        #expect(bad.status != 0 && bad.stderr.contains("winograd4x4"), "\(bad.stderr)")
    }

    @Test func groupNormAndFocalLoss() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixture = try PyTorchParityTests.Fixture(.resnet18, .group(32))
        let model = try ResNet(.resnet18, numClasses: 10, stem: .cifar, norm: .group(32))
        FixtureWeights.load(into: model, seed: fixture.seed)
        let gnWeights = dir.appendingPathComponent("gn.safetensors").path, gnInput = dir.appendingPathComponent("gnx.safetensors").path
        try SafeTensorsFile(tensors: model.stateDict()).write(to: gnWeights)
        try SafeTensorsFile(tensors: [("input", fixture.file["input"]!), ("target", fixture.file["target"]!)]).write(to: gnInput)
        let args = ["run", "--arch", "resnet18", "--num-classes", "10", "--stem", "cifar", "--norm", "group:32",
                    "--weights", gnWeights, "--input", gnInput, "--output", output, "--train"]

        let result = try Self.run(args)
        #expect(result.status == 0, "\(result.stderr)")
        let out = try SafeTensorsFile(contentsOf: output)
        #expect(out.metadata["norm"] == "group:32")
        try fixture.expectClose(try #require(out["loss"]).floats(), "train.loss", floor: PyTorchParityTests.outputFloor)
        try fixture.expectClose(try #require(out["grad.layer2.0.bn1.weight"]).floats(), "train.grad.layer2.0.bn1.weight",
                                floor: PyTorchParityTests.gradientFloor)

        // Focal loss: the same as FocalLoss on the model in this process.
        let alpha: [Float] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]
        let focal = try Self.run(args + ["--loss", "focal", "--focal-gamma", "1.5", "--focal-alpha", alpha.map { "\($0)" }.joined(separator: ",")])
        #expect(focal.status == 0, "\(focal.stderr)")
        let focalOut = try SafeTensorsFile(contentsOf: output)
        let logits = try model.forward(fixture.reference("input"))
        let targets = try #require(fixture.file["target"]).integers().map { Int($0) }
        let (loss, gradient) = try FocalLoss(gamma: 1.5, alpha: .perClass(alpha))(logits, targets: targets)
        _ = try model.backward(gradient)
        for (name, ours) in [("loss", Tensor(scalar: loss)), ("grad.fc.weight", try model.fc.weight.requiredGrad()),
                             ("grad.conv1.weight", try model.conv1.weight.requiredGrad())] {
            let theirs = try #require(focalOut[name]).floats().scalars
            let diff = zip(ours.scalars, theirs).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) }
            let norm = ours.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }
            #expect(diff.squareRoot() <= 1e-5 * norm.squareRoot(), "\(name)")
        }

        for (extra, message) in [(["--norm", "group:5"], "bn1"), (["--focal-gamma", "1"], "--loss focal"),
                                 (["--norm", "batch"], "running_mean")] {
            let bad = try Self.run(args + extra)
            #expect(bad.status != 0, "\(extra)")
            #expect(bad.stderr.contains(message), "\(extra): \(bad.stderr)")
        }
    }

    @Test func badInputsFailWithAMessageAndNoOutput() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try ResNet(.seresnet18, numClasses: 10, stem: .cifar, width: 8)
        var state = SafeTensorsFile(tensors: try SafeTensorsFile(contentsOf: weights).tensors)
        let corrupt = dir.appendingPathComponent("corrupt.safetensors").path
        try Data([1, 2, 3, 4, 5, 6, 7, 8, 9]).write(to: URL(fileURLWithPath: corrupt))
        state.tensors.removeAll { $0.name == "layer2.1.bn2.bias" }
        let missingKey = dir.appendingPathComponent("missing.safetensors").path
        try state.write(to: missingKey)
        let narrow = dir.appendingPathComponent("narrow.safetensors").path
        try SafeTensorsFile(tensors: model.stateDict()).write(to: narrow)
        // A diverged run's weights, and a variance no BatchNorm can have: NaN logits, exit 0, before.
        func edited(_ name: String, _ key: String, _ value: Float) throws -> String {
            let path = dir.appendingPathComponent(name).path
            let tensors = try SafeTensorsFile(contentsOf: weights).tensors.map { entry -> (String, SafeTensor) in
                guard entry.name == key else { return (entry.name, entry.tensor) }
                var t = entry.tensor.floats()
                t[0] = value
                return (entry.name, SafeTensor(t))
            }
            try SafeTensorsFile(tensors: tensors).write(to: path)
            return path
        }
        let nanWeight = try edited("nan.safetensors", "layer3.0.conv1.weight", .nan)
        let negativeVariance = try edited("negvar.safetensors", "layer1.1.bn2.running_var", -1)
        let noTarget = dir.appendingPathComponent("notarget.safetensors").path
        try SafeTensorsFile(tensors: [("input", SafeTensor(Tensor(shape: [2, 3, 8, 8])))]).write(to: noTarget)
        let wrongChannels = dir.appendingPathComponent("wrongchannels.safetensors").path
        try SafeTensorsFile(tensors: [("input", SafeTensor(Tensor(shape: [2, 1, 8, 8])))]).write(to: wrongChannels)

        let cases: [(args: [String], message: String)] = [
            (["run", "--arch", "resnet19", "--weights", weights, "--input", input, "--output", output], "resnet19"),
            (base.map { $0 == weights ? "/nonexistent/w.safetensors" : $0 }, "/nonexistent/w.safetensors"),
            (base.map { $0 == weights ? corrupt : $0 }, "corrupt.safetensors"),
            (base.map { $0 == weights ? missingKey : $0 }, "layer2.1.bn2.bias"),
            (base.map { $0 == weights ? narrow : $0 } + ["--width", "64"], "wrong shapes"),
            (base.map { $0 == weights ? nanWeight : $0 }, "nan.safetensors: layer3.0.conv1.weight holds nan: weights must be finite"),
            (base.map { $0 == weights ? negativeVariance : $0 }, "layer1.1.bn2.running_var holds -1.0: a variance cannot be negative"),
            (base.map { $0 == input ? noTarget : $0 } + ["--train"], "target"),
            (base.map { $0 == input ? wrongChannels : $0 }, "[2, 1, 8, 8]"),
            (base.map { $0 == "10" ? "0" : $0 }, "--num-classes"),
            (base.map { $0 == output ? "/nonexistent/dir/out.safetensors" : $0 }, "/nonexistent/dir/out.safetensors"),
        ]
        for (args, message) in cases {
            let result = try Self.run(args)
            #expect(result.status != 0, "\(args)")
            #expect(result.stderr.contains(message), "\(args): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output), "\(args) left an output file")
        }
        // Without --width, a plain state_dict's width is its conv1's.
        let narrowRun = try Self.run(base.map { $0 == weights ? narrow : $0 })
        #expect(narrowRun.status == 0, "\(narrowRun.stderr)")

        // An --output that is an input (by another spelling, or through a link) is refused, the input kept.
        let link = dir.appendingPathComponent("link.safetensors").path
        #expect(symlink(input, link) == 0)
        let weightsBefore = try Data(contentsOf: URL(fileURLWithPath: weights))
        for (output, flag) in [(dir.path + "/./w.safetensors", "--weights"), (link, "--input")] {
            let result = try Self.run(base.map { $0 == self.output ? output : $0 })
            #expect(result.status != 0)
            #expect(result.stderr.contains("--output \(output) is the \(flag) file"), "\(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: weights)) == weightsBefore)
        #expect(try SafeTensorsFile(contentsOf: input)["input"] != nil)
    }

    /// Without `--stem`, `run` takes the stem the weights record; weights that record none
    /// and whose 3×3 conv1 fits both the cifar and the strided stem are refused, not loaded
    /// into the architecture's default, which would be a silent guess.
    @Test func runTakesTheRecordedStem() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let withoutStem = base.filter { $0 != "--stem" && $0 != "cifar" }
        let guessed = try Self.run(withoutStem)
        #expect(guessed.status != 0)
        #expect(guessed.stderr.contains("pass --stem"), "\(guessed.stderr)")

        let recorded = dir.appendingPathComponent("recorded.safetensors").path
        try SafeTensorsFile(tensors: try SafeTensorsFile(contentsOf: weights).tensors, metadata: ["stem": "cifar"]).write(to: recorded)
        let read = try Self.run(withoutStem.map { $0 == weights ? recorded : $0 })
        #expect(read.status == 0, "\(read.stderr)")
        let fixture = try PyTorchParityTests.Fixture("seresnet18_cifar")
        try fixture.expectClose(try #require(try SafeTensorsFile(contentsOf: output)["logits"]).floats(), "eval.logits",
                                floor: PyTorchParityTests.outputFloor)
        let contradicted = try Self.run(base.map { $0 == weights ? recorded : $0 == "cifar" ? "strided" : $0 })
        #expect(contradicted.status != 0)
        #expect(contradicted.stderr.contains("records stem cifar"), "\(contradicted.stderr)")
    }

    /// `bench` reports its own peak memory, not the high-water mark Linux carries into a
    /// child from the process that started it (as `ru_maxrss` does, which made every
    /// inference figure of the PyTorch comparison at least its driver's memory): started
    /// from a process holding 1 GiB, a tiny model's peak stays far below that.
    @Test func benchReportsItsOwnPeakMemory() throws {
        let held = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 30, alignment: 64)
        defer { held.deallocate() }
        memset(held.baseAddress!, 1, held.count)
        let result = try Self.run(["bench", "--arch", "resnet8", "--stem", "cifar", "--in-chans", "1", "--num-classes", "10",
                                   "--input", "8", "8", "--batch", "2", "--steps", "1", "--warmup", "0", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let peak = try #require(report?["peak_rss_bytes"] as? Int)
        #expect(peak > 0 && peak < 1 << 29, "\(peak)")
    }

    /// `bench` reports the loss before any update (PyTorch's, from the fixture) and after one
    /// SGD update on the same batch (the library's own step, taken here), so that the PyTorch
    /// comparison checks backward and the optimizer too; and the median of an even number of
    /// steps is the mean of the middle two, not the slower one.
    @Test func benchReportsBothLossesAndTheMedian() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let result = try Self.run(["bench", "--arch", "seresnet18", "--stem", "cifar", "--num-classes", "10", "--weights", weights,
                                   "--data", input, "--warmup", "0", "--steps", "2", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let first = try #require(report["first_loss"] as? Double), second = try #require(report["second_loss"] as? Double)
        let fixture = try PyTorchParityTests.Fixture("seresnet18_cifar")
        try fixture.expectClose(Tensor(scalar: Float(first)), "train.loss", floor: PyTorchParityTests.outputFloor)

        let model = try ResNet(.seresnet18, numClasses: 10, stem: .cifar)
        try model.loadStateDict(SafeTensorsFile(contentsOf: weights))
        model.train()
        let (x, targets) = (try #require(fixture.file["input"]).floats(), try #require(fixture.file["target"]).integers().map { Int($0) })
        let sgd = try SGD(model.parameters(), learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4)
        _ = try model.backward(try CrossEntropyLoss()(try model.forward(x), targets: targets).gradient)
        sgd.step()
        let (expected, _) = try CrossEntropyLoss()(try model.forward(x), targets: targets)
        #expect(abs(second - Double(expected)) <= 1e-5 * Double(expected), "bench \(second), one SGD step here \(expected)")
        #expect(abs(second - first) > 1e-4 * first, "the update changed nothing: \(first) then \(second)")

        let samples = try #require(report["step_seconds_samples"] as? [Double])
        let median = try #require(report["step_seconds"] as? Double)
        try #require(samples.count == 2 && samples[0] != samples[1], "\(samples)")
        #expect(abs(median - (samples[0] + samples[1]) / 2) <= 1e-12, "\(median) of \(samples)")
    }

    /// A loss that diverged is a result too: `--json` writes it as "NaN" (JSON has no NaN),
    /// where the encoder used to throw and lose the whole report.
    @Test func benchReportsADivergedLoss() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        // Finite weights (non-finite ones are refused), inputs at Float32's largest: activations overflow.
        let file = try SafeTensorsFile(contentsOf: input)
        let diverged = dir.appendingPathComponent("huge-input.safetensors").path
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try SafeTensorsFile(tensors: file.tensors.map {
            $0.name == "input" ? ($0.name, SafeTensor(Tensor(shape: $0.tensor.shape, repeating: .greatestFiniteMagnitude))) : $0
        }).write(to: diverged)
        let result = try Self.run(["bench", "--arch", "seresnet18", "--stem", "cifar", "--num-classes", "10", "--weights", weights,
                                   "--data", diverged, "--warmup", "0", "--steps", "1", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(report["first_loss"] as? String == "NaN", "\(report["first_loss"] ?? "none")")
    }

    /// Sizes whose arithmetic overflowed, or whose model no machine could hold, used to trap.
    @Test func hugeSizesAreRefused() throws {
        let cases: [(args: [String], firstLine: String)] = [
            (["receptive-field", "--arch", "resnet18", "--input", "9223372036854775807", "1"],
             "Error: --input takes two sizes H W in 1...16384, got 9223372036854775807 1"),
            (["receptive-field", "--arch", "resnet18", "--width", "4611686018427387904"],
             "Error: --width must be in 1...1024, got 4611686018427387904"),
            (["bench", "--arch", "resnet18", "--batch", "2", "--input", "3037000500", "3037000500"],
             "Error: --input takes two sizes H W in 1...16384, got 3037000500 3037000500"),
            (["bench", "--arch", "resnet18", "--batch", "4096", "--input", "16384", "16384"],
             "Error: an input batch of 4096×3×16384×16384 floats needs more than 8 GB"),
            (["receptive-field", "--arch", "resnet8", "--head-grid", "4294967296"],
             "Error: --head-grid must be in 1...64, got 4294967296"),
            (["receptive-field", "--arch", "resnet8", "--in-chans", "9223372036854775807"],
             "Error: --in-chans must be in 1...4096, got 9223372036854775807"),
            (["receptive-field", "--arch", "resnet8", "--num-classes", "100000000"],
             "Error: --num-classes must be in 1...1048576, got 100000000"),
            // A step count went to reserveCapacity: a crash at Int.max, an 8 GB array at 10⁹.
            (["bench", "--arch", "resnet8", "--width", "8", "--input", "16", "16", "--batch", "2", "--steps", "9223372036854775807"],
             "Error: --steps must be in 1...1000000, got 9223372036854775807"),
            (["bench", "--arch", "resnet8", "--width", "8", "--input", "16", "16", "--batch", "2", "--warmup", "9223372036854775807"],
             "Error: --warmup must be in 0...1000000, got 9223372036854775807"),
        ]
        for (args, firstLine) in cases {
            let result = try Self.run(args)
            #expect(result.status != 0, "\(args)")
            #expect(result.stderr.split(separator: "\n").first.map(String.init) == firstLine, "\(args): \(result.stderr)")
        }
        // Each flag in range, together 10¹⁴ weights: refused before any is allocated.
        let huge = try Self.run(["bench", "--arch", "resnet50", "--width", "1024", "--num-classes", "1048576", "--head-grid", "64",
                                 "--input", "32", "32", "--batch", "2", "--steps", "1"])
        #expect(huge.status != 0)
        #expect(huge.stderr.hasPrefix("Error: ResNet: weights of resnet50 at width 1024 with 1048576 classes over a 64×64 head grid: 5629"), "\(huge.stderr)")
        #expect(huge.stderr.contains(" GB, more than the "), "\(huge.stderr)")
        // The receptive-field table needs the layers' windows, not those weights.
        let table = try Self.run(["receptive-field", "--arch", "resnet50", "--width", "1024", "--num-classes", "1048576",
                                  "--head-grid", "64", "--input", "2048", "2048"])
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains("layer4.2") && table.stdout.contains("fc"))
    }
}

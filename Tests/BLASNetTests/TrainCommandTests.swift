import Foundation
import Testing
@testable import BLASNet

/// `blasnet train` and `blasnet eval` end to end on a tiny IDX dataset in Fashion-MNIST's layout.
@Suite(.serialized)
struct TrainCommandTests {
    let dir: URL
    let data: String

    /// Writes an IDX image file `[n, h, w]` and its label file.
    static func writeIDX(images: [UInt8], labels: [UInt8], h: Int, w: Int, prefix: String, in dir: URL) throws {
        func header(_ magic: UInt32, _ dims: [Int]) -> Data {
            var d = Data()
            for v in [magic] + dims.map(UInt32.init) { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
            return d
        }
        try (header(0x803, [labels.count, h, w]) + Data(images)).write(to: dir.appendingPathComponent("\(prefix)-images-idx3-ubyte"))
        try (header(0x801, [labels.count]) + Data(labels)).write(to: dir.appendingPathComponent("\(prefix)-labels-idx1-ubyte"))
    }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("blasnet-train-\(UUID().uuidString)")
        let dataDir = dir.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        data = dataDir.path
        // Class c is a bright c-th row band on noise: learnable, so accuracy has room to move.
        var rng = SeededGenerator(seed: 5)
        for (prefix, count) in [("train", 96), ("t10k", 40)] {
            let labels = (0..<count).map { _ in UInt8.random(in: 0..<10, using: &rng) }
            let images = labels.flatMap { label in
                (0..<100).map { i in i / 10 == Int(label) ? UInt8(200) : UInt8.random(in: 0...60, using: &rng) }
            }
            try Self.writeIDX(images: images, labels: labels, h: 10, w: 10, prefix: prefix, in: dataDir)
        }
    }

    func train(_ extra: [String], environment: [String: String] = [:], in directory: URL? = nil) throws
        -> (status: Int32, stdout: String, stderr: String) {
        try RunCommandTests.run(["train", "--data", data, "--arch", "resnet8", "--width", "4", "--batch-size", "16",
                                 "--lr", "0.05", "--schedule", "constant", "--threads", "1"] + extra, environment: environment, in: directory)
    }

    func modelTensors(_ path: String) throws -> [String: SafeTensor] {
        Dictionary(uniqueKeysWithValues: try SafeTensorsFile(contentsOf: path).tensors.filter { !$0.name.hasPrefix("optimizer.") })
    }

    /// The presets' rate and decay are SGD's: a new AdamW run takes torch.optim.AdamW's
    /// where no flag sets them (here the rate), and keeps the one given (the decay).
    @Test func adamWTakesTorchsDefaults() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("adamw").path
        let result = try RunCommandTests.run(["train", "--data", data, "--arch", "resnet8", "--width", "4", "--batch-size", "16",
                                              "--schedule", "constant", "--threads", "1", "--epochs", "1",
                                              "--optimizer", "adamw", "--weight-decay", "0.05", "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try SafeTensorsFile(contentsOf: out + "/last.safetensors").metadata["settings"])
        let settings = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect((settings["learningRate"] as? Double).map(Float.init) == 1e-3)
        #expect((settings["weightDecay"] as? Double).map(Float.init) == 0.05)
    }

    /// `run --weights` takes a `train` checkpoint as its weights: the optimizer state
    /// beside them is not an unexpected key, and the model's shape is the recorded one
    /// (width, input channels, classes, norm), which a flag may not contradict.
    @Test func runReadsATrainCheckpoint() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("run").path
        #expect(try train(["--epochs", "1", "--out", out]).status == 0)
        let checkpoint = out + "/last.safetensors", input = out + "/batch.safetensors", output = out + "/logits.safetensors"
        let x = GradientCheck.random([2, 1, 10, 10], seed: 3)
        try SafeTensorsFile(tensors: [("input", SafeTensor(x))]).write(to: input)
        let arguments = ["run", "--arch", "resnet8", "--threads", "1", "--weights", checkpoint, "--input", input, "--output", output]
        let contradicted = try RunCommandTests.run(arguments + ["--norm", "layer"])
        #expect(contradicted.status != 0 && contradicted.stderr.contains("--norm layer contradicts"), "\(contradicted.stderr)")
        let result = try RunCommandTests.run(arguments)
        #expect(result.status == 0, "\(result.stderr)")
        let model = try ResNet(.resnet8, numClasses: 10, inChannels: 1, stem: .strided, width: 4)
        try model.loadStateDict(try TrainingCheckpoint(contentsOf: checkpoint).modelStateDict)
        model.eval()
        let expected = try withoutGradients { try model.forward(x) }
        // Other thread counts may split the sums differently: equal to rounding.
        let logits = try #require(try SafeTensorsFile(contentsOf: output)["logits"]).floats()
        #expect(logits.shape == expected.shape)
        #expect(zip(logits.scalars, expected.scalars).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
    }

    /// A PyTorch state_dict records no head grid: `eval` reads it from `fc.weight`'s shape,
    /// as the model README's finetune section tells PyTorch users to build.
    @Test func evalReadsTheHeadGridOfAPlainStateDict() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let weights = dir.appendingPathComponent("grid2.safetensors").path
        let model = try ResNet(.resnet8, numClasses: 10, inChannels: 1, stem: .cifar, width: 4, headGrid: 2)
        try SafeTensorsFile(tensors: model.stateDict()).write(to: weights)
        let e = try RunCommandTests.run(["eval", "--weights", weights, "--arch", "resnet8", "--width", "4", "--stem", "cifar",
                                         "--data", data, "--threads", "1"])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(e.stdout.contains("accuracy"), "\(e.stdout)")
    }

    /// `--mean` and `--std` replace the normalization a file records or the training split
    /// gives (torchvision's ImageNet constants for its weights); finetune records them.
    @Test func normalizationFlagsReplaceTheDefault() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let weights = dir.appendingPathComponent("plain.safetensors").path, out = dir.appendingPathComponent("tuned").path
        try SafeTensorsFile(tensors: try ResNet(.resnet8, numClasses: 10, inChannels: 1, stem: .cifar, width: 4).stateDict())
            .write(to: weights)
        let common = ["--weights", weights, "--arch", "resnet8", "--width", "4", "--stem", "cifar", "--data", data, "--threads", "1"]
        let loss = { (text: String) in text.firstMatch(of: #/loss ([0-9.]+)/#).map { String($0.output.1) } }
        let computed = try RunCommandTests.run(["eval"] + common)
        let given = try RunCommandTests.run(["eval"] + common + ["--mean", "0.7", "--std", "0.05"])
        #expect(computed.status == 0 && given.status == 0, "\(computed.stderr) \(given.stderr)")
        #expect(loss(computed.stdout) != nil && loss(computed.stdout) != loss(given.stdout), "\(computed.stdout) \(given.stdout)")
        let wrongCount = try RunCommandTests.run(["eval"] + common + ["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"])
        #expect(wrongCount.status != 0 && wrongCount.stderr.contains("one per input channel (1)"), "\(wrongCount.stderr)")
        let alone = try RunCommandTests.run(["eval"] + common + ["--mean", "0.5"])
        #expect(alone.status != 0 && alone.stderr.contains("--mean and --std go together"), "\(alone.stderr)")
        let tuned = try RunCommandTests.run(["finetune"] + common + ["--classes", "5-9", "--strategy", "head", "--mean", "0.7",
                                                                     "--std", "0.05", "--out", out])
        #expect(tuned.status == 0, "\(tuned.stderr)")
        let tunedFile = try SafeTensorsFile(contentsOf: out + "/finetuned.safetensors")
        let meta = tunedFile.metadata
        #expect(meta["mean"] == "0.7" && meta["std"] == "0.05", "\(meta)")
        // A damaged record is refused, naming it: it used to give way silently to recomputed statistics or all classes.
        for (key, value, message) in [("std", "0.05,x", "its metadata std '0.05,x' is not a list of finite numbers above zero"),
                                      ("mean", "nan", "its metadata mean 'nan' is not a list of finite numbers"),
                                      ("classes", "0-9999999999999999999", "its metadata classes '0-9999999999999999999' is not a class list")] {
            var damaged = meta
            damaged[key] = value
            let path = dir.appendingPathComponent("damaged-\(key).safetensors").path
            try SafeTensorsFile(tensors: tunedFile.tensors, metadata: damaged).write(to: path)
            let e = try RunCommandTests.run(["eval", "--weights", path, "--data", data, "--threads", "1"])
            #expect(e.status != 0 && e.stderr.contains("\(path): \(message)"), "\(key): \(e.stderr)")
        }
    }

    /// RGB weights (torchvision's ImageNet ones) fine-tune on one-channel images: conv1 is
    /// summed over its colours, as timm's adapt_input_conv. Here the ImageNet stem leaves
    /// the 10×10 images a 1×1 last feature map, which the head reads whole (a 2×2 grid
    /// would repeat it four times).
    @Test func finetuneAdaptsRGBWeightsToGrayImages() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let weights = dir.appendingPathComponent("rgb.safetensors").path, out = dir.appendingPathComponent("gray").path
        let rgb = try ResNet(.resnet8, numClasses: 10, inChannels: 3, stem: .imagenet, width: 4)
        try SafeTensorsFile(tensors: rgb.stateDict()).write(to: weights)
        let tuned = try RunCommandTests.run(["finetune", "--weights", weights, "--arch", "resnet8",
                                             "--data", data, "--classes", "5-9", "--strategy", "head", "--threads", "1", "--out", out])
        #expect(tuned.status == 0, "\(tuned.stderr)")
        #expect(tuned.stdout.contains("conv1.weight adapted from 3 to 1 input channels"), "\(tuned.stdout)")
        let file = try SafeTensorsFile(contentsOf: out + "/finetuned.safetensors")
        let conv1 = try #require(file["conv1.weight"]).floats()
        let summed = try SafeTensorsFile(tensors: rgb.stateDict()).adaptingInputChannels(to: 1)["conv1.weight"]?.floats()
        #expect(conv1.shape == [4, 1, 7, 7] && conv1.scalars == summed?.scalars)
        #expect(file.metadata["head_grid"] == "1" && file.metadata["width"] == "4", "\(file.metadata)")

        // Weights whose 2×2 head grid does not divide the last map here (3×3 with the cifar
        // stem) fine-tune all the same: the map is measured under a global-average head.
        let gridded = dir.appendingPathComponent("grid2.safetensors").path, out2 = dir.appendingPathComponent("grid2").path
        try SafeTensorsFile(tensors: try ResNet(.resnet8, numClasses: 10, inChannels: 1, stem: .cifar, width: 4, headGrid: 2).stateDict())
            .write(to: gridded)
        let regridded = try RunCommandTests.run(["finetune", "--weights", gridded, "--arch", "resnet8", "--stem", "cifar", "--data", data,
                                                 "--classes", "5-9", "--strategy", "head", "--threads", "1", "--out", out2])
        #expect(regridded.status == 0, "\(regridded.stderr)")
        #expect(try SafeTensorsFile(contentsOf: out2 + "/finetuned.safetensors").metadata["head_grid"] == "2")
        let frozenHead = try RunCommandTests.run(["finetune", "--weights", gridded, "--arch", "resnet8", "--stem", "cifar", "--data", data,
                                                  "--strategy", "partial", "--freeze", "conv1,fc", "--out", out2])
        #expect(frozenHead.status != 0 && frozenHead.stderr.contains("--freeze fc: the new classifier always trains"), "\(frozenHead.stderr)")
        // A grid past the 3×3 map only repeats it (16×16: normal equations of 8,192 features, which ran for minutes).
        let oversized = try RunCommandTests.run(["finetune", "--weights", gridded, "--arch", "resnet8", "--stem", "cifar", "--data", data,
                                                 "--strategy", "head", "--head-grid", "16", "--threads", "1", "--out", out2, "--overwrite"])
        #expect(oversized.status != 0, "\(oversized.stderr)")
        #expect(oversized.stderr.contains("--head-grid 16: the last feature map is 3×3 on 10×10 images"), "\(oversized.stderr)")
        // A directory where the output file goes is refused before any work (it failed only at the final write).
        let blocked = dir.appendingPathComponent("blocked").path
        try FileManager.default.createDirectory(atPath: blocked + "/finetuned.safetensors", withIntermediateDirectories: true)
        let intoDirectory = try RunCommandTests.run(["finetune", "--weights", gridded, "--arch", "resnet8", "--stem", "cifar", "--data", data,
                                                     "--strategy", "head", "--threads", "1", "--out", blocked, "--overwrite"])
        #expect(intoDirectory.status != 0 && intoDirectory.stderr.contains("finetuned.safetensors is a directory"), "\(intoDirectory.stderr)")
        #expect(!intoDirectory.stdout.contains("loaded"), "\(intoDirectory.stdout)")
    }

    /// Into a file, stdout is block-buffered: flushed before the error is written, the
    /// progress printed before it comes before it in one stream (it used to come at exit, after).
    @Test func progressPrecedesTheErrorInOneStream() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let weights = dir.appendingPathComponent("plain.safetensors").path, log = dir.appendingPathComponent("combined.log")
        try SafeTensorsFile(tensors: try ResNet(.resnet8, numClasses: 10, inChannels: 1, stem: .cifar, width: 4).stateDict())
            .write(to: weights)
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = RunCommandTests.executable
        process.arguments = ["finetune", "--weights", weights, "--arch", "resnet8", "--stem", "cifar", "--data", data, "--classes", "5-9",
                             "--strategy", "partial", "--freeze", "layer9", "--threads", "1", "--out", dir.appendingPathComponent("out").path]
        (process.standardOutput, process.standardError) = (handle, handle)
        try process.run()
        process.waitUntilExit()
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(process.terminationStatus != 0, "\(text)")
        let loaded = try #require(text.range(of: "loaded "), "\(text)"), error = try #require(text.range(of: "Error:"), "\(text)")
        #expect(loaded.lowerBound < error.lowerBound, "\(text)")
    }

    /// A resume through a symlink to the run's own directory is a resume in place:
    /// `--overwrite` must not remove that run's files as an earlier run's.
    @Test func overwriteKeepsTheRunResumedThroughALink() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let real = dir.appendingPathComponent("real").path, link = dir.appendingPathComponent("link").path
        #expect(try train(["--epochs", "1", "--out", real]).status == 0)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: real)
        let resumed = try RunCommandTests.run(["train", "--resume", link, "--out", real, "--overwrite", "--epochs", "1",
                                               "--threads", "1", "--data", data])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        for file in ["last.safetensors", "best.safetensors", "metrics.csv"] {
            #expect(FileManager.default.fileExists(atPath: real + "/" + file), "\(file)")
        }
    }

    @Test func twoEpochsEqualOneEpochPlusResume() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let whole = dir.appendingPathComponent("whole").path, split = dir.appendingPathComponent("split").path
        let a = try train(["--epochs", "2", "--out", whole])
        #expect(a.status == 0, "\(a.stderr)")
        // A second new run into the same directory would replace this one's files.
        let saved = try Data(contentsOf: URL(fileURLWithPath: whole + "/last.safetensors"))
        let again = try train(["--epochs", "1", "--seed", "5", "--out", whole])
        #expect(again.status != 0)
        #expect(again.stderr.contains("--resume \(whole)") && again.stderr.contains("--overwrite"), "\(again.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: whole + "/last.safetensors")) == saved)
        let replaced = dir.appendingPathComponent("replaced").path
        #expect(try train(["--epochs", "1", "--out", replaced]).status == 0)
        #expect(try train(["--epochs", "1", "--seed", "5", "--out", replaced, "--overwrite"]).status == 0)
        let b = try train(["--epochs", "1", "--out", split])
        #expect(b.status == 0, "\(b.stderr)")
        let c = try RunCommandTests.run(["train", "--resume", split, "--epochs", "2", "--threads", "1", "--data", data])
        #expect(c.status == 0, "\(c.stderr)")
        let wholeWeights = try modelTensors(whole + "/last.safetensors")
        #expect(wholeWeights.count > 10)
        #expect(wholeWeights == (try modelTensors(split + "/last.safetensors")))

        // Progress, per-epoch lines, metrics and chart.
        #expect(a.stdout.contains("epoch 2/2"), "\(a.stdout)")
        #expect(a.stdout.contains("test loss"))
        let csv = try String(contentsOfFile: split + "/metrics.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 3)
        #expect(csv[0].hasPrefix("epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds"))
        #expect(FileManager.default.fileExists(atPath: split + "/curves.svg"))
        #expect(FileManager.default.fileExists(atPath: split + "/best.safetensors"))
        let checkpoint = try TrainingCheckpoint(contentsOf: split + "/last.safetensors")
        #expect(checkpoint.completedEpochs == 2)
        #expect(checkpoint.metadata["arch"] == "resnet8")
        #expect(checkpoint.file.tensors.contains { $0.name.hasPrefix("optimizer.") })

        // eval reads the architecture and normalization from the checkpoint.
        let e = try RunCommandTests.run(["eval", "--weights", whole + "/best.safetensors", "--data", data, "--threads", "1"])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(e.stdout.contains("accuracy"))
        #expect(e.stdout.contains("confusion matrix"))
        #expect(e.stdout.contains("Ankle boot"))
    }

    /// Settings that only the data can rule out are refused by flag, before any training:
    /// a batch larger than the training split, a warm-up longer than the run, more frozen
    /// stages than the architecture has.
    @Test func settingsTheDataRulesOutNameTheirFlag() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["--batch-size", "200"], "--batch-size 200 is more than the 96 training images"),
            (["--warmup", "5"], "--warmup 5.0 epochs must end before the run's 1"),
        ]
        for (extra, message) in cases {
            let r = try train(["--epochs", "1", "--out", dir.appendingPathComponent("refused").path] + extra)
            #expect(r.status != 0 && r.stderr.contains(message), "\(extra): \(r.stderr)")
        }
        let pre = dir.appendingPathComponent("pre").path
        #expect(try train(["--epochs", "1", "--out", pre]).status == 0)
        let partial = try RunCommandTests.run(["finetune", "--weights", pre + "/last.safetensors", "--data", data,
                                               "--strategy", "partial:9", "--out", dir.appendingPathComponent("ft").path])
        #expect(partial.status != 0 && partial.stderr.contains("--strategy partial:9: resnet8 has 3 stages"), "\(partial.stderr)")
    }

    @Test func groupNormAndFocalLossAreKeptInTheCheckpoint() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("gn").path
        let a = try train(["--epochs", "1", "--out", out, "--norm", "group:2", "--loss", "focal", "--focal-alpha", "0.5"])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("group:2 norm") && a.stdout.contains("focal loss"), "\(a.stdout)")
        let checkpoint = try TrainingCheckpoint(contentsOf: out + "/last.safetensors")
        #expect(checkpoint.metadata["norm"] == "group:2")
        #expect(checkpoint.metadata["settings"]?.contains("\"lossName\":\"focal\"") == true)
        // Without flags the focal γ and α are recorded as used; a checkpoint from before α's
        // default became 1 records neither, and resumes with the 0.25 it was trained with.
        let defaults = dir.appendingPathComponent("focal-defaults").path
        #expect(try train(["--epochs", "1", "--out", defaults, "--loss", "focal"]).status == 0)
        let recorded = try SafeTensorsFile(contentsOf: defaults + "/last.safetensors")
        let settings = try #require(recorded.metadata["settings"])
        #expect(settings.contains("\"focalAlpha\":[1]") && settings.contains("\"focalGamma\":2"), "\(settings)")
        var legacy = recorded
        legacy.metadata["settings"] = settings.replacingOccurrences(of: "\"focalAlpha\":[1],", with: "")
            .replacingOccurrences(of: ",\"focalAlpha\":[1]", with: "")
        #expect(legacy.metadata["settings"]?.contains("focalAlpha") == false)
        try legacy.write(to: defaults + "/last.safetensors")
        let resumedLegacy = try RunCommandTests.run(["train", "--resume", defaults, "--epochs", "2", "--data", data])
        #expect(resumedLegacy.status == 0, "\(resumedLegacy.stderr)")
        #expect(try SafeTensorsFile(contentsOf: defaults + "/last.safetensors").metadata["settings"]?.contains("\"focalAlpha\":[0.25]") == true)
        #expect(!checkpoint.file.tensors.contains { $0.name.hasSuffix("running_mean") })

        // eval builds the same norm layers from the checkpoint; a resumed run keeps them.
        let e = try RunCommandTests.run(["eval", "--weights", out + "/last.safetensors", "--data", data, "--threads", "1"])
        #expect(e.status == 0, "\(e.stderr)")
        let changed = try RunCommandTests.run(["train", "--resume", out, "--epochs", "2", "--norm", "layer", "--data", data])
        #expect(changed.status != 0)
        #expect(changed.stderr.contains("--norm layer differs"), "\(changed.stderr)")
        let otherOptimizer = try RunCommandTests.run(["train", "--resume", out, "--epochs", "2", "--optimizer", "adamw", "--data", data])
        #expect(otherOptimizer.status != 0)
        #expect(otherOptimizer.stderr.contains("--optimizer adamw differs"), "\(otherOptimizer.stderr)")
        // Continued in another directory with no epoch left to beat it, the run still has its best weights there.
        let elsewhere = dir.appendingPathComponent("gn-continued").path
        let moved = try RunCommandTests.run(["train", "--resume", out, "--out", elsewhere, "--epochs", "1", "--threads", "2", "--data", data])
        #expect(moved.status == 0, "\(moved.stderr)")
        // Not the 1 thread the run was trained with: bit for bit no longer, and it says so.
        #expect(moved.stdout.contains("split its sgemms over 1 threads and goes on over 2"), "\(moved.stdout)")
        let best = try #require(FileManager.default.contents(atPath: out + "/best.safetensors"))
        #expect(FileManager.default.contents(atPath: elsewhere + "/best.safetensors") == best)
        // And its checkpoint and history (the copy had best alone, and could not be resumed from).
        let last = try SafeTensorsFile(contentsOf: out + "/last.safetensors"), copy = try SafeTensorsFile(contentsOf: elsewhere + "/last.safetensors")
        #expect(copy.tensors.map(\.name) == last.tensors.map(\.name) && copy.tensors.map(\.tensor) == last.tensors.map(\.tensor))
        let history = { (file: SafeTensorsFile) in try JSONSerialization.jsonObject(with: Data(file.metadata["history", default: ""].utf8)) as? NSArray }
        #expect(try history(copy) == history(last) && history(last)?.count == 1)
        #expect(FileManager.default.fileExists(atPath: elsewhere + "/metrics.csv"))
        let onward = try RunCommandTests.run(["train", "--resume", elsewhere, "--epochs", "1", "--data", data])
        #expect(onward.status == 0 && onward.stdout.contains("already trained 1 of 1 epochs"), "\(onward.stderr)")
        let resumed = try RunCommandTests.run(["train", "--resume", out, "--epochs", "2", "--threads", "1", "--data", data])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(!resumed.stdout.contains("note: the run so far"), "\(resumed.stdout)")

        let indivisible = try train(["--epochs", "1", "--out", dir.appendingPathComponent("g3").path, "--norm", "group:3"])
        #expect(indivisible.status != 0)
        #expect(indivisible.stderr.contains("bn1"), "\(indivisible.stderr)")
    }

    /// A plain state dict says nothing of the model's shape; finetune takes it from flags and
    /// must record it, or eval would rebuild the default stem and evaluate a different network.
    @Test func finetunedFileRecordsAShapeGivenByFlags() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let pre = dir.appendingPathComponent("pre-strided").path
        #expect(try train(["--epochs", "1", "--classes", "0-4", "--stem", "strided", "--out", pre]).status == 0)
        let plain = dir.appendingPathComponent("plain.safetensors").path
        try SafeTensorsFile(tensors: try SafeTensorsFile(contentsOf: pre + "/last.safetensors").tensors
            .filter { !$0.name.hasPrefix("optimizer.") }).write(to: plain)
        let out = dir.appendingPathComponent("ft-plain").path
        let f = try RunCommandTests.run(["finetune", "--weights", plain, "--arch", "resnet8", "--width", "4", "--stem", "strided",
                                         "--data", data, "--classes", "5-9", "--strategy", "head", "--threads", "1", "--out", out])
        #expect(f.status == 0, "\(f.stderr)")
        let meta = try SafeTensorsFile(contentsOf: out + "/finetuned.safetensors").metadata
        #expect(meta["arch"] == "resnet8" && meta["width"] == "4" && meta["stem"] == "strided" && meta["in_chans"] == "1", "\(meta)")
        let e = try RunCommandTests.run(["eval", "--weights", out + "/finetuned.safetensors", "--data", data, "--threads", "1"])
        #expect(e.status == 0, "\(e.stderr)")
        let accuracy = { (text: String, pattern: String) in text.firstMatch(of: try! Regex(pattern))?.output[1].substring }
        #expect(accuracy(e.stdout, #"accuracy ([0-9.]+)%"#) == accuracy(f.stdout, #"test accuracy ([0-9.]+)%"#), "\(e.stdout)")

        // The cifar stem has the strided stem's weights: a flag that contradicts the record,
        // or no flag for a file that records none, would score another network.
        let contradicted = try RunCommandTests.run(["eval", "--weights", out + "/finetuned.safetensors", "--stem", "cifar",
                                                    "--data", data, "--threads", "1"])
        #expect(contradicted.status != 0)
        #expect(contradicted.stderr.contains("--stem cifar contradicts"), "\(contradicted.stderr)")
        // Its head's five outputs are classes 5-9: five others would be scored against the wrong labels.
        let otherClasses = try RunCommandTests.run(["eval", "--weights", out + "/finetuned.safetensors", "--classes", "0-4",
                                                    "--data", data, "--threads", "1"])
        #expect(otherClasses.status != 0)
        #expect(otherClasses.stderr.contains("--classes contradicts"), "\(otherClasses.stderr)")
        let unsaid = try RunCommandTests.run(["eval", "--weights", plain, "--arch", "resnet8", "--width", "4", "--classes", "0-4",
                                              "--data", data, "--threads", "1"])
        #expect(unsaid.status != 0)
        #expect(unsaid.stderr.contains("pass --stem"), "\(unsaid.stderr)")
        // Without recorded classes, a head of 5 outputs cannot be scored on all 10.
        let allClasses = try RunCommandTests.run(["eval", "--weights", plain, "--arch", "resnet8", "--width", "4", "--stem", "strided",
                                                  "--data", data, "--threads", "1"])
        #expect(allClasses.status != 0)
        #expect(allClasses.stderr.contains("has 5 outputs") && allClasses.stderr.contains("--classes"), "\(allClasses.stderr)")
        // A file whose head is not a classifier's, whose head_grid is absurd, or whose
        // backbone is not the model's (keys under a prefix) is refused, not fine-tuned from random weights.
        let tensors = try SafeTensorsFile(contentsOf: plain).tensors
        func refused(_ file: SafeTensorsFile, _ command: String, _ message: String) throws {
            let path = dir.appendingPathComponent("bad.safetensors").path
            try file.write(to: path)
            let extra = command == "finetune" ? ["--strategy", "head", "--out", dir.appendingPathComponent("ft-bad").path] : []
            let r = try RunCommandTests.run([command, "--weights", path, "--arch", "resnet8", "--width", "4", "--stem", "strided",
                                             "--data", data, "--classes", "5-9", "--threads", "1"] + extra)
            #expect(r.status == 1, "\(command) \(message): \(r.stderr)")
            #expect(r.stderr.contains(message), "\(r.stderr)")
        }
        let hugeHead = try SafeTensor(dtype: .f32, shape: [1 << 62, 0], bytes: Data())
        try refused(SafeTensorsFile(tensors: tensors.map { $0.name == "fc.weight" ? ($0.name, hugeHead) : $0 }), "finetune",
                    "fc.weight has shape [4611686018427387904, 0]")
        try refused(SafeTensorsFile(tensors: tensors.map { ("model." + $0.name, $0.tensor) }), "finetune", "keys missing (conv1.weight, bn1.weight, bn1.bias, …)")
        for command in ["finetune", "eval"] {
            try refused(SafeTensorsFile(tensors: tensors, metadata: ["head_grid": "4294967296"]), command, "head_grid '4294967296'")
        }
        // Nor is the fine-tuned model replaced by a second run.
        let again = try RunCommandTests.run(["finetune", "--weights", plain, "--arch", "resnet8", "--width", "4", "--stem", "strided",
                                             "--data", data, "--classes", "5-9", "--strategy", "head", "--threads", "1", "--out", out])
        #expect(again.status != 0)
        #expect(again.stderr.contains("--overwrite"), "\(again.stderr)")
    }

    @Test func finetuneOnNewClassesKeepsFrozenPartsAndExplainsAuto() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let pre = dir.appendingPathComponent("pre").path
        let a = try train(["--epochs", "1", "--classes", "0-4", "--out", pre])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(try TrainingCheckpoint(contentsOf: pre + "/last.safetensors").file["fc.weight"]?.shape == [5, 16])
        func finetune(_ strategy: [String], out: String) throws -> (status: Int32, stdout: String, stderr: String) {
            try RunCommandTests.run(["finetune", "--weights", pre + "/last.safetensors", "--data", data, "--classes", "5-9",
                                     "--epochs", "1", "--batch-size", "4", "--threads", "1", "--out", out] + strategy)
        }
        for strategy in [["head"], ["partial:1"], ["partial", "--freeze", "conv1,bn1,layer1.0"], ["auto"]] {
            let out = dir.appendingPathComponent("ft-\(strategy[0])").path
            let f = try finetune(["--strategy"] + strategy, out: out)
            #expect(f.status == 0, "\(strategy): \(f.stderr)")
            #expect(f.stdout.contains("unchanged: yes"), "\(strategy): \(f.stdout)")
            #expect(f.stdout.contains("test accuracy"))
            let tuned = try SafeTensorsFile(contentsOf: out + "/finetuned.safetensors")
            // head pools over a 2×2 grid unless told otherwise; the others keep the global average.
            let grid = Int(tuned.metadata["head_grid"] ?? "") ?? 0
            #expect(strategy == ["head"] ? grid == 2 : strategy == ["auto"] || grid == 1, "\(strategy): grid \(grid)")
            #expect(tuned["fc.weight"]?.shape == [5, 16 * grid * grid])
            if strategy == ["auto"] { #expect(f.stdout.contains("images per class") && f.stdout.contains("BatchNorm shift")) }
            // eval finds the classes in the file and agrees with finetune's own figure.
            let e = try RunCommandTests.run(["eval", "--weights", out + "/finetuned.safetensors", "--data", data, "--threads", "1"])
            #expect(e.status == 0, "\(strategy): \(e.stderr)")
            let accuracy = { (text: String, pattern: String) in text.firstMatch(of: try! Regex(pattern))?.output[1].substring }
            #expect(accuracy(e.stdout, #"accuracy ([0-9.]+)%"#) == accuracy(f.stdout, #"test accuracy ([0-9.]+)%"#), "\(e.stdout)")
        }
        let whole = try RunCommandTests.run(["eval", "--weights", dir.appendingPathComponent("ft-head/finetuned.safetensors").path,
                                             "--data", data, "--classes", "0-9"])
        #expect(whole.status != 0)
        #expect(whole.stderr.contains("--classes contradicts"), "\(whole.stderr)")

        // A group-norm network fine-tunes with its own norm layers; auto has no BatchNorm statistics to measure.
        let gn = dir.appendingPathComponent("pre-gn").path
        #expect(try train(["--epochs", "1", "--classes", "0-4", "--norm", "group:4", "--out", gn]).status == 0)
        let gnHead = try RunCommandTests.run(["finetune", "--weights", gn + "/last.safetensors", "--data", data, "--classes", "5-9",
                                              "--strategy", "head", "--threads", "1", "--out", dir.appendingPathComponent("ft-gn").path])
        #expect(gnHead.status == 0, "\(gnHead.stderr)")
        #expect(try SafeTensorsFile(contentsOf: dir.appendingPathComponent("ft-gn/finetuned.safetensors").path).metadata["norm"] == "group:4")
        let gnAuto = try RunCommandTests.run(["finetune", "--weights", gn + "/last.safetensors", "--data", data, "--classes", "5-9",
                                              "--out", dir.appendingPathComponent("ft-gn-auto").path])
        #expect(gnAuto.status != 0)
        #expect(gnAuto.stderr.contains("BatchNorm running statistics"), "\(gnAuto.stderr)")
        let unknown = try finetune(["--strategy", "partial", "--freeze", "conv1,layer9"], out: dir.appendingPathComponent("ft-bad").path)
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("no layer 'layer9'") && unknown.stderr.contains("layer1"), "\(unknown.stderr)")
        // A number is a name to --freeze (there is no layer '2'), not partial:2's stage count.
        let number = try finetune(["--strategy", "partial", "--freeze", "2"], out: dir.appendingPathComponent("ft-number").path)
        #expect(number.status != 0)
        #expect(number.stderr.contains("no layer '2'"), "\(number.stderr)")
        let empty = try finetune(["--strategy", "partial", "--freeze", "conv1,,bn1"], out: dir.appendingPathComponent("ft-empty").path)
        #expect(empty.status != 0)
        #expect(empty.stderr.contains("comma-separated"), "\(empty.stderr)")
    }

    @Test func badInputGetsOneClearLine() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try RunCommandTests.run(["train", "--data", dir.appendingPathComponent("nowhere").path, "--epochs", "1"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("train-images-idx3-ubyte"), "\(missing.stderr)")
        let badResume = try RunCommandTests.run(["train", "--resume", dir.appendingPathComponent("nothing").path])
        #expect(badResume.status != 0)
        #expect(badResume.stderr.contains("last.safetensors"), "\(badResume.stderr)")
        let badSchedule = try train(["--schedule", "zigzag"])
        #expect(badSchedule.status != 0)
        #expect(badSchedule.stderr.contains("zigzag"), "\(badSchedule.stderr)")

        // A negative number is a value to validate, not an unknown flag; a file where the
        // output directory should be is found before any training.
        let blocker = dir.appendingPathComponent("file").path
        _ = FileManager.default.createFile(atPath: blocker, contents: Data())
        let cases: [(args: [String], firstLine: String)] = [
            (["--batch-size", "-3"], "Error: --batch-size must be at least 2 (BatchNorm statistics), got -3"),
            (["--width", "-1"], "Error: --width must be in 1...1024, got -1"),
            (["--random-erasing", "2"], "Error: --random-erasing is a probability in 0...1, got 2.0"),
            (["--classes", "3"], "Error: --classes needs at least two classes to tell apart, got [3]"),
            (["--schedule", "cosine:minimum=5"], "Error: --schedule cosine:minimum=5.0 is above the peak rate --lr 0.05"),
            // Out of range, these used to trap converting warm-up epochs or multiplying epochs by steps.
            (["--warmup", "inf"], "Error: --warmup must be in 0...100000 epochs, got inf"),
            (["--epochs", "9223372036854775807"], "Error: --epochs must be in 1...100000, got 9223372036854775807"),
            (["--epochs", "1", "--out", blocker + "/run"], "Error: cannot create output directory \(blocker): a file is in the way"),
            // These used to trap: building the range, the width's arrays, the crop's random draw.
            (["--classes", "0-9223372036854775806"],
             "Error: The value '0-9223372036854775806' is invalid for '--classes <classes>': a range of more than 65536 classes"),
            (["--classes", "9-5"], "Error: The value '9-5' is invalid for '--classes <classes>': a range goes up, as 0-4"),
            (["--width", "4611686018427387904"], "Error: --width must be in 1...1024, got 4611686018427387904"),
            (["--epochs", "1", "--crop-padding", "9223372036854775807", "--out", dir.appendingPathComponent("pad").path],
             "Error: data loader: crop padding 9223372036854775807 is not in 0...10, the images' size"),
        ]
        for (args, firstLine) in cases {
            let result = try train(args)
            #expect(result.status != 0)
            #expect(result.stderr.split(separator: "\n").first.map(String.init) == firstLine, "\(args): \(result.stderr)")
        }
        // Found while the command runs, a bad value is its message alone: the usage text
        // ArgumentParser would add is the top-level command's.
        let contradiction = try train(["--schedule", "cosine:minimum=5"])
        #expect(contradiction.status == 64 && !contradiction.stderr.contains("Usage:"), "\(contradiction.stderr)")

        let unpenalized = try RunCommandTests.run(["finetune", "--weights", blocker, "--ridge", "0"])
        #expect(unpenalized.stderr.split(separator: "\n").first == "Error: --ridge must be positive and finite, got 0.0", "\(unpenalized.stderr)")

        // Runs that fail after making their output directory, before writing to it, take
        // the directories they made away again (they used to stay, empty); the others stay.
        let exists = { (path: String) in FileManager.default.fileExists(atPath: dir.appendingPathComponent(path).path) }
        let noData = try RunCommandTests.run(["train", "--data", dir.appendingPathComponent("nowhere").path,
                                              "--out", dir.appendingPathComponent("new/run").path])
        #expect(noData.status != 0 && !exists("new") && exists("file"))
        let emptyWeights = try RunCommandTests.run(["finetune", "--weights", blocker, "--data", data,
                                                    "--out", dir.appendingPathComponent("tuned/run").path])
        #expect(emptyWeights.status != 0 && !exists("tuned"), "\(emptyWeights.stderr)")

        // A one-letter relative --out: this Foundation's deletingLastPathComponent traps on it.
        let relative = try train(["--epochs", "1", "--out", "w/r"].map { $0 }, in: dir)
        #expect(relative.status == 0, "\(relative.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("w/r/last.safetensors").path))
        // A batch as large as an Int can be: one batch of the whole test split.
        let whole = try RunCommandTests.run(["eval", "--weights", dir.appendingPathComponent("w/r/last.safetensors").path,
                                             "--batch-size", "9223372036854775807", "--data", data, "--threads", "1"])
        #expect(whole.status == 0, "\(whole.stderr)")
    }

    /// A checkpoint edited or damaged into counts or settings no run can take is refused
    /// with its path named, not trapped on partway through the resume.
    @Test func aDamagedCheckpointIsRefusedOnResume() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good").path
        #expect(try train(["--epochs", "1", "--out", good]).status == 0)
        let file = try SafeTensorsFile(contentsOf: good + "/last.safetensors")
        let edits: [(key: String, edit: (String) -> String, message: String)] = [
            ("completed_epochs", { _ in "-1" }, "completed_epochs -1"),
            // Counted on from there, the next step's count would overflow.
            ("optimizer_steps", { _ in "9223372036854775807" }, "optimizer_steps 9223372036854775807"),
            ("epoch_progress", { $0.replacingOccurrences(of: "\"steps\":0", with: "\"steps\":-1") }, "-1 steps"),
            // Ignored, it resumed at the start of the epoch it had been inside.
            ("epoch_progress", { $0.replacingOccurrences(of: "{", with: "[") }, "epoch_progress is not a readable epoch position"),
            ("settings", { $0.replacingOccurrences(of: "\"warmupEpochs\":0", with: "\"warmupEpochs\":1e300") }, "--warmup must be in"),
        ]
        for (key, edit, message) in edits {
            var metadata = file.metadata
            let edited = edit(metadata[key]!)
            #expect(edited != metadata[key], "\(key) was not edited: \(metadata[key]!)")
            metadata[key] = edited
            let damaged = dir.appendingPathComponent("damaged-\(key)").path
            try FileManager.default.createDirectory(atPath: damaged, withIntermediateDirectories: true)
            try SafeTensorsFile(tensors: file.tensors, metadata: metadata).write(to: damaged + "/last.safetensors")
            let resumed = try RunCommandTests.run(["train", "--resume", damaged, "--epochs", "2", "--data", data, "--threads", "1"])
            #expect(resumed.status == 1, "\(key): \(resumed.stderr)")
            #expect(resumed.stderr.contains(damaged + "/last.safetensors") && resumed.stderr.contains(message), "\(key): \(resumed.stderr)")
        }
        // A preset is a new run's settings; a resumed run keeps its own.
        let preset = try RunCommandTests.run(["train", "--resume", good, "--preset", "long", "--data", data])
        #expect(preset.status != 0)
        #expect(preset.stderr.contains("--preset long"), "\(preset.stderr)")
    }
}

import BLASNet
import Foundation

/// A file reader under fuzzing. Given any bytes it must return or throw
/// ``BLASNetError``: a trap, an out-of-bounds access, a hang or another error type is a
/// finding.
enum FuzzTarget: String, CaseIterable {
    /// `SafeTensorsFile(data:)`, then every tensor's conversion to floats and integers.
    case safetensors
    /// `IDX.readImages(data:)` and `IDX.readLabels(data:classes:)`, raw or gzip.
    case idx
    /// `ImageDataset(cifarBatch:of:)` as CIFAR-10 and as CIFAR-100.
    case cifar

    /// Runs the target's readers on `data`: one line per reader saying what it read or
    /// the error it threw.
    func run(_ data: Data) -> [String] {
        switch self {
        case .safetensors:
            return [outcome {
                let file = try SafeTensorsFile(data: data)
                for (_, tensor) in file.tensors {
                    _ = tensor.floats()
                    // Floating-point tensors throw here by design; only a trap would be a finding.
                    _ = try? tensor.integers()
                }
                return "\(file.tensors.count) tensors, \(file.metadata.count) metadata entries"
            }]
        case .idx:
            return [
                outcome {
                    let images = try IDX.readImages(data: data)
                    return "images: \(images.count) of \(images.height)×\(images.width)"
                },
                outcome { "labels: \(try IDX.readLabels(data: data, classes: 10).count)" },
            ]
        case .cifar:
            return [DatasetName.cifar10, .cifar100].map { name in
                outcome { "\(name.displayName): \(try ImageDataset(cifarBatch: data, of: name).count) records" }
            }
        }
    }

    /// What `read` returned, or the BLASNetError it threw; any other error breaks the
    /// readers' contract and stops the process, so that libFuzzer records the input.
    private func outcome(_ read: () throws -> String) -> String {
        do {
            return try read()
        } catch let error as BLASNetError {
            return "error: \(error)"
        } catch {
            fatalError("a \(rawValue) reader threw \(type(of: error)), not BLASNetError: \(error)")
        }
    }
}

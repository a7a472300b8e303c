import Foundation
@testable import BLASNet

/// The deterministic weights of scripts/fixture_weights.py, regenerated bit-exactly so
/// the fixtures need not store tens of megabytes of weights.
enum FixtureWeights {
    static func fnv1a64(_ s: String) -> UInt64 {
        s.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
    }

    /// `u_i` in [-1, 1), exactly as the Python generator computes it.
    static func uniform(_ key: String, count: Int, seed: UInt64 = 0) -> [Double] {
        let h0 = fnv1a64(key) ^ seed
        return (0..<count).map { i in
            var z = h0 &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Double(z >> 40) / Double(1 << 23) - 1
        }
    }

    static func tensor(_ key: String, shape: [Int], seed: UInt64 = 0, scale: Double = 1, offset: Double = 0) -> Tensor {
        // Multiply, then add, each rounded in Float64, then one rounding to Float32 (no FMA).
        let values = uniform(key, count: shape.reduce(1, *), seed: seed).map { (u: Double) -> Float in
            let scaled = u * scale
            return Float(scaled + offset)
        }
        return try! Tensor(shape: shape, scalars: values)
    }

    static func scaleOffset(_ key: String, _ shape: [Int]) -> (Double, Double) {
        if key.hasSuffix("running_var") { return (0.5, 1) }
        if key.hasSuffix("running_mean") { return (0.1, 0) }
        if key.hasSuffix(".weight") && shape.count == 1 { return (0.25, 1) }
        if key.hasSuffix(".bias") { return (0.1, 0) }
        return ((6 / Double(shape.dropFirst().reduce(1, *))).squareRoot(), 0)
    }

    /// Overwrites every parameter and float buffer of `model` with the fixture weights.
    static func load(into model: any Module, seed: UInt64 = 0) {
        for (name, p) in model.namedParameters() {
            let (scale, offset) = scaleOffset(name, p.value.shape)
            p.value = tensor(name, shape: p.value.shape, seed: seed, scale: scale, offset: offset)
        }
        for (name, b) in model.namedBuffers() {
            if b.kind == .int64 {
                b.value = Tensor(shape: b.value.shape)
            } else {
                let (scale, offset) = scaleOffset(name, b.value.shape)
                b.value = tensor(name, shape: b.value.shape, seed: seed, scale: scale, offset: offset)
            }
        }
    }
}

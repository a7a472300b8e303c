import Foundation

/// A seedable generator (SplitMix64): the same seed gives the same weights on every run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator whose sequence is a function of `seed` alone, on every machine.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits (one SplitMix64 step).
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A draw from `0..<n` by the high half of a 128-bit product (Lemire's method
    /// without the rejection step: the bias, under n / 2⁶⁴, is far below anything a
    /// dataset's size can show), fixed so that draws never change with the Swift version.
    mutating func below(_ n: Int) -> Int {
        Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }
}

extension MutableCollection where Self: RandomAccessCollection {
    /// Fisher–Yates, each draw the high half of `next()·(i + 1)`: the standard library's
    /// `shuffle(using:)` may change between Swift versions, and a seeded run (or a resumed
    /// one) must replay the same order.
    public mutating func seededShuffle(using rng: inout SeededGenerator) {
        var i = count - 1
        while i > 0 {
            swapAt(index(startIndex, offsetBy: i), index(startIndex, offsetBy: rng.below(i + 1)))
            i -= 1
        }
    }
}

extension Tensor {
    /// Uniform samples in `-bound ..< bound` (PyTorch's default layer initialization).
    static func uniform(shape: [Int], bound: Float, using rng: inout SeededGenerator) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let count = t.count
        t.withUnsafeMutablePointer { p in for i in 0..<count { p[i] = Float.random(in: -bound..<bound, using: &rng) } }
        return t
    }

    /// Normal samples with mean 0 and standard deviation `std` (Box–Muller).
    static func normal(shape: [Int], std: Float, using rng: inout SeededGenerator) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let count = t.count
        t.withUnsafeMutablePointer { p in
            for i in 0..<count {
                let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
                p[i] = Float(sqrt(-2 * log(u1)) * cos(2 * .pi * u2)) * std
            }
        }
        return t
    }
}

#if FUZZING
import CLibFuzzer
import Foundation

/// libFuzzer drives the target through a C function pointer, which cannot capture it.
nonisolated(unsafe) private var fuzzTarget = FuzzTarget.safetensors

/// libFuzzer's callback: one input, borrowed without copying so that AddressSanitizer
/// sees a read past its end as one.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let data = bytes.map { Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: count, deallocator: .none) } ?? Data()
    _ = fuzzTarget.run(data)
    return 0
}

/// libFuzzer as a library: this program keeps its own main, because SwiftPM links an
/// executable's main under another name and aliases it, which leaves no room for
/// libFuzzer's.
enum LibFuzzer {
    /// Runs libFuzzer with command-line `arguments` (its options and corpus directories)
    /// on `target`; returns its exit status.
    static func run(_ target: FuzzTarget, arguments: [String]) -> Int32 {
        fuzzTarget = target
        let argv = ([CommandLine.arguments[0]] + arguments).map { strdup($0) } + [nil]
        var argc = Int32(argv.count - 1)
        return argv.withUnsafeBufferPointer { buffer in
            var pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = UnsafeMutablePointer(mutating: buffer.baseAddress)
            return LLVMFuzzerRunDriver(&argc, &pointer, fuzzOneInput)
        }
    }
}
#endif

import Foundation

/// The fuzz targets of BLASNet's file readers, one program for all of them.
///
/// Built plainly it replays inputs: `blasnet-fuzz TARGET FILE...` runs each file through
/// the target's readers and prints what they made of it, so that a finding reproduces
/// with messages and a debugger. Built by `scripts/fuzz` (with `-DFUZZING` and
/// `-sanitize=fuzzer,address`), `blasnet-fuzz TARGET [libFuzzer options] [corpus ...]`
/// runs libFuzzer on the target.
@main
enum BLASNetFuzz {
    /// Set in fuzzing builds for libFuzzer's own re-executions of the program (such as
    /// `-minimize_crash`), which pass its options but not our target argument.
    static let targetVariable = "BLASNET_FUZZ_TARGET"

    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let target: FuzzTarget
        if let first = arguments.first, let named = FuzzTarget(rawValue: first) {
            target = named
            arguments.removeFirst()
        } else if let inherited = ProcessInfo.processInfo.environment[targetVariable].flatMap(FuzzTarget.init) {
            target = inherited
        } else {
            #if FUZZING
            let operands = "[libFuzzer options] [corpus ...]"
            #else
            let operands = "FILE..."
            #endif
            let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
            FileHandle.standardError.write(Data("usage: blasnet-fuzz \(names) \(operands)\n".utf8))
            exit(2)
        }
        #if FUZZING
        setenv(targetVariable, target.rawValue, 1)
        exit(LibFuzzer.run(target, arguments: arguments))
        #else
        exit(replay(target, files: arguments))
        #endif
    }

    /// Runs each file through `target`; a trap stops the program at the input that caused it.
    static func replay(_ target: FuzzTarget, files: [String]) -> Int32 {
        var status: Int32 = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                FileHandle.standardError.write(Data("cannot read \(file)\n".utf8))
                status = 1
                continue
            }
            for line in target.run(data) { print("\(file): \(line)") }
        }
        return status
    }
}

import Foundation

/// This process's resident memory (RSS), as `ps` and `top` report it.
public enum ResidentMemory {
    /// Bytes resident now, from `/proc/self/statm` (0 where that file does not exist).
    public static var currentBytes: Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }

    /// The most bytes ever resident at once: `VmHWM` in `/proc/self/status`.
    ///
    /// Not `getrusage`'s `ru_maxrss`: Linux carries the high-water mark of the address
    /// space that `exec` replaced into it, so a program started from a large process
    /// (a benchmark driver with PyTorch loaded) reports at least that process's memory.
    public static var peakBytes: Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kilobytes = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) }) {
            return kilobytes * 1024
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// What this process can hold at most: the machine's physical memory, or less under an
    /// address-space limit (`ulimit -v`). A request past it cannot succeed, and Swift
    /// traps on a failed allocation, so callers refuse such sizes with an error first.
    public static var availableBytes: Double {
        var limit = rlimit()
        let physical = Double(ProcessInfo.processInfo.physicalMemory)
        guard getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return physical }
        return min(physical, Double(limit.rlim_cur))
    }

    /// Throws unless `bytes` fit in ``availableBytes``; `what` names them in the error.
    ///
    /// Sizes come in as `Double` so that callers multiply dimensions without overflow
    /// and without an array (layers check their outputs on every forward, which must not
    /// allocate). Below a gigabyte the limit is not even read.
    static func checkFits(bytes: Double, _ what: @autoclosure () -> String) throws {
        guard bytes > Double(1 << 30) else { return }
        let memory = availableBytes
        guard bytes <= memory else {
            throw BLASNetError.invalidArgument(String(format: "%@: %.1f GB, more than the %.1f GB this process may use",
                                                      what(), bytes / 1e9, memory / 1e9))
        }
    }
}

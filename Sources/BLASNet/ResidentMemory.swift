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

    /// The most bytes ever resident at once (Linux reports kilobytes).
    public static var peakBytes: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }
}

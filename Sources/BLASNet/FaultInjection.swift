import Foundation
import Synchronization

/// Deliberate failures for the crash-safety tests, chosen by the environment variable
/// `BLASNET_FAULT_INJECTION` (unset in normal use, where each hook is one comparison):
/// - `kill-after-step:N`: SIGKILL right after the run's optimizer step N (1-based);
/// - `interrupt-after-step:N`: SIGINT to itself after step N, as a Ctrl-C then would;
/// - `kill-in-write:N`: SIGKILL halfway through the process's Nth atomic file write,
///   leaving a half-written temporary file, as a kill during a checkpoint would.
///
/// The tests need faults at exact places: a kill from outside could not be timed to
/// land inside a write that takes milliseconds.
enum FaultInjection {
    enum Fault: Equatable {
        case killAfterStep(Int), interruptAfterStep(Int), killInWrite(Int)
    }

    static let fault: Fault? = {
        guard let spec = ProcessInfo.processInfo.environment["BLASNET_FAULT_INJECTION"] else { return nil }
        let parts = spec.split(separator: ":")
        guard parts.count == 2, let n = Int(parts[1]) else { return nil }
        switch parts[0] {
        case "kill-after-step": return .killAfterStep(n)
        case "interrupt-after-step": return .interruptAfterStep(n)
        case "kill-in-write": return .killInWrite(n)
        default: return nil
        }
    }()
    private static let writes = Atomic<Int>(0)

    /// Called after optimizer step `step` of the run (1-based).
    static func afterStep(_ step: Int) {
        switch fault {
        case .killAfterStep(step): raise(SIGKILL)
        case .interruptAfterStep(step): raise(SIGINT)
        default: break
        }
    }

    /// Called by ``AtomicFile`` when half of a file's bytes are in its temporary file.
    static func midWrite() {
        guard case let .killInWrite(n) = fault else { return }
        if writes.add(1, ordering: .relaxed).newValue == n { raise(SIGKILL) }
    }
}

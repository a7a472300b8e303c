import Foundation
import Synchronization

/// Deliberate failures for the crash-safety tests, chosen by the environment variable
/// `BLASNET_FAULT_INJECTION` (unset in normal use, where each hook is one comparison):
/// - `kill-in-step:N`: SIGKILL inside the run's step N (1-based), after its backward pass;
/// - `interrupt-in-step:N`: SIGINT to itself there, as a Ctrl-C during step N would;
/// - `kill-in-write:N`: SIGKILL halfway through the process's Nth atomic file write,
///   leaving a half-written temporary file, as a kill during a checkpoint would.
///
/// The tests need faults at exact places: a kill from outside could not be timed to
/// land inside a write that takes milliseconds.
enum FaultInjection {
    enum Fault: Equatable {
        case killInStep(Int), interruptInStep(Int), killInWrite(Int)
    }

    static let fault: Fault? = {
        guard let spec = ProcessInfo.processInfo.environment["BLASNET_FAULT_INJECTION"] else { return nil }
        let parts = spec.split(separator: ":")
        guard parts.count == 2, let n = Int(parts[1]) else { return nil }
        switch parts[0] {
        case "kill-in-step": return .killInStep(n)
        case "interrupt-in-step": return .interruptInStep(n)
        case "kill-in-write": return .killInWrite(n)
        default: return nil
        }
    }()
    private static let writes = Atomic<Int>(0)

    /// Called in step `step` of the run (1-based) after backward, before the step decides
    /// whether to stop.
    static func inStep(_ step: Int) {
        switch fault {
        case .killInStep(step): raise(SIGKILL)
        case .interruptInStep(step): raise(SIGINT)
        default: break
        }
    }

    /// Called by ``AtomicFile`` when half of a file's bytes are in its temporary file.
    static func midWrite() {
        guard case let .killInWrite(n) = fault else { return }
        if writes.add(1, ordering: .relaxed).newValue == n { raise(SIGKILL) }
    }
}

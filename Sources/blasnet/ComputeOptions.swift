import ArgumentParser
import BLASNet
import BLASNetDistributed
import Foundation

/// `--threads` and `--conv-algorithm`, shared by the commands that compute.
struct ComputeOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Worker threads for the sgemms and kernels (default: OpenBLAS's choice, one per core; under MPI, train --distributed and bench --distributed, the cores divided among the ranks on each machine).")
    var threads: Int?

    @Option(help: "How 3×3 stride-1 convolutions run: automatic (F(2×2, 3×3) Winograd where it pays, else im2col), winograd (F(2×2, 3×3)), winograd4x4 (F(4×4, 3×3): fewer flops, several times the rounding error of im2col) or im2col.")
    var convAlgorithm: ConvolutionAlgorithm = .automatic

    func validate() throws {
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive, got \(threads)") }
    }

    /// Sets ``BLAS/threads`` to the flag's count; without one, a rank of `processes` takes
    /// its share of the machine's cores and a lone process keeps OpenBLAS's choice.
    func apply(processes: MPIProcessGroup? = nil) {
        if let threads {
            let cores = ProcessInfo.processInfo.activeProcessorCount
            if threads > cores {
                FileHandle.standardError.write(Data("note: --threads \(threads) is more than the \(cores) cores; the threads will take turns on them\n".utf8))
            }
            BLAS.threads = threads
        } else if let processes {
            BLAS.threads = processes.coresPerProcess
        }
    }

    /// Sets `--conv-algorithm` on every convolution of `model`.
    func configure(_ model: Module) {
        model.setConvolutionAlgorithm(convAlgorithm)
    }
}

extension MPIProcessGroup {
    /// Rank 0 reports for the job: the other ranks' stdout goes to /dev/null (their
    /// errors still reach stderr).
    func reportFromRootOnly() {
        if !isRoot { dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO) }
    }
}

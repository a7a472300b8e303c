import BLASNet
import CMPI
import Foundation

/// The processes of an MPI job (`mpirun -np P …`, Slurm's `srun`) and the collectives
/// data-parallel training needs. MPI errors come back as thrown ``BLASNetError``s
/// naming the call and the rank, instead of MPI's default of aborting the job silently.
///
/// Only the thread that created the group calls MPI (`MPI_THREAD_FUNNELED`).
public final class MPIProcessGroup: CrossProcessSum {
    /// This process's index in the job, `0..<size`; rank 0 prints and writes files.
    public let rank: Int
    /// Number of processes in the job.
    public let size: Int
    /// Number of the job's processes on this machine (this one included).
    public let localSize: Int
    private let communicator: MPI_Comm

    /// Joins the job: initializes MPI once per process. Started without `mpirun`, MPI
    /// makes this a job of one process.
    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        var provided: Int32 = 0
        if initialized == 0 {
            try Self.check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided), "MPI_Init_thread", rank: -1)
        } else {
            MPI_Query_thread(&provided)
        }
        // OpenBLAS's and the kernels' threads run beside the one thread that calls MPI,
        // which MPI_THREAD_SINGLE does not allow.
        guard provided >= Int32(MPI_THREAD_FUNNELED) else {
            throw BLASNetError.io("this MPI provides thread support level \(provided), below MPI_THREAD_FUNNELED "
                                  + "(\(MPI_THREAD_FUNNELED)) that BLASNet's worker threads need; use an MPI built with thread support")
        }
        communicator = cmpi_comm_world()
        MPI_Comm_set_errhandler(communicator, cmpi_errors_return())
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(communicator, &rank)
        MPI_Comm_size(communicator, &size)
        (self.rank, self.size) = (Int(rank), Int(size))
        var local: MPI_Comm?
        var localSize: Int32 = 1
        if MPI_Comm_split_type(communicator, Int32(MPI_COMM_TYPE_SHARED), rank, cmpi_info_null(), &local) == MPI_SUCCESS {
            MPI_Comm_size(local, &localSize)
            MPI_Comm_free(&local)
        }
        self.localSize = Int(localSize)
    }

    /// Cores for each process on this machine, so that the processes' worker threads
    /// together do not oversubscribe it.
    public var coresPerProcess: Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount / max(localSize, 1))
    }

    /// Whether this is rank 0, the process that reports and writes.
    public var isRoot: Bool { rank == 0 }

    /// Replaces each element of `values` by its sum over the processes (MPI_Allreduce).
    public func sum(_ values: inout [Double]) throws {
        let count = Int32(values.count)
        try values.withUnsafeMutableBufferPointer {
            try check(MPI_Allreduce(cmpi_in_place(), $0.baseAddress, count, cmpi_double(), cmpi_sum(), communicator),
                      "MPI_Allreduce")
        }
    }

    /// Rank 0's `data` on every process (others pass anything, nil included).
    public func broadcast(_ data: Data?) throws -> Data {
        var length = [Int64(isRoot ? data?.count ?? 0 : 0)]
        try check(MPI_Bcast(&length, 1, cmpi_long(), 0, communicator), "MPI_Bcast")
        var bytes = isRoot ? [UInt8](data ?? Data()) : [UInt8](repeating: 0, count: Int(length[0]))
        // MPI counts are 32-bit: large payloads go in chunks.
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, 1 << 30)
            try bytes.withUnsafeMutableBufferPointer {
                try check(MPI_Bcast($0.baseAddress! + offset, Int32(chunk), cmpi_byte(), 0, communicator), "MPI_Bcast")
            }
            offset += chunk
        }
        return Data(bytes)
    }

    /// Starts summing `count` floats at `buffer` in place over the processes
    /// (MPI_Iallreduce); `buffer` must stay valid until ``waitAll(_:)`` returns.
    func startSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> MPI_Request? {
        var request = cmpi_request_null()
        try check(MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), cmpi_float(), cmpi_sum(), communicator, &request),
                  "MPI_Iallreduce")
        return request
    }

    /// Lets MPI move outstanding operations on: without a progress thread, a
    /// non-blocking collective advances only inside MPI calls.
    func progress(_ requests: inout [MPI_Request?]) throws {
        guard !requests.isEmpty else { return }
        var done: Int32 = 0
        try check(MPI_Testall(Int32(requests.count), &requests, &done, cmpi_statuses_ignore()), "MPI_Testall")
    }

    /// Waits for every request.
    func waitAll(_ requests: inout [MPI_Request?]) throws {
        guard !requests.isEmpty else { return }
        try check(MPI_Waitall(Int32(requests.count), &requests, cmpi_statuses_ignore()), "MPI_Waitall")
    }

    /// Waits until every process has arrived here.
    public func barrier() throws {
        try check(MPI_Barrier(communicator), "MPI_Barrier")
    }

    /// Leaves the job; call once, after the last collective.
    public func finalize() {
        MPI_Finalize()
    }

    private func check(_ code: Int32, _ call: String) throws {
        try Self.check(code, call, rank: rank)
    }

    private static func check(_ code: Int32, _ call: String, rank: Int) throws {
        guard code != MPI_SUCCESS else { return }
        var text = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        let message = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw BLASNetError.io("\(call) failed\(rank >= 0 ? " on rank \(rank)" : ""): \(message); another process of the job has probably failed")
    }
}

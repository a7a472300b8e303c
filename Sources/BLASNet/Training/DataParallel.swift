/// Sums values across the processes of a data-parallel job. BatchNorm given one
/// (``BatchNorm/synchronization``) normalizes with the statistics of the global batch,
/// as PyTorch's SyncBatchNorm does.
public protocol CrossProcessSum: AnyObject {
    /// Replaces every element of `values` by its sum over all processes; every process
    /// calls it with the same count, in the same order.
    func sum(_ values: inout [Double]) throws
}

/// What a data-parallel job gives the ``Trainer`` (see ``Trainer/dataParallel``): each
/// process trains on its shard of every global batch (``DataLoader`` `shard`), its
/// gradients are averaged over the processes while backward runs, and the step's loss,
/// accuracy and stop requests are summed over them, so every process takes the same step.
public protocol DataParallel: CrossProcessSum {
    /// Runs `backward` (the model's backward pass) and returns when the gradient of every
    /// trainable parameter of `model` is its mean over the processes.
    func averageGradients(of model: any Module, during backward: () throws -> Void) throws
}

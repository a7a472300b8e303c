/// The sliding-window geometry shared by convolutions and pooling.
public struct Window: Sendable, Equatable {
    public var kernel: (h: Int, w: Int)
    public var stride: (h: Int, w: Int)
    public var padding: (h: Int, w: Int)
    public var dilation: (h: Int, w: Int)

    /// A square window, the same along both axes. Not checked here: layers call
    /// `validate` (a positive kernel, stride and dilation; padding within range).
    public init(kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1) {
        self.kernel = (kernel, kernel)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
    }

    /// A window with its own size along each axis, checked as the square one is.
    public init(kernel: (h: Int, w: Int), stride: (h: Int, w: Int), padding: (h: Int, w: Int), dilation: (h: Int, w: Int)) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    public static func == (a: Window, b: Window) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation
    }

    /// Kernel extent once dilated: `d·(k − 1) + 1`.
    public var effectiveKernel: (h: Int, w: Int) {
        (dilation.h * (kernel.h - 1) + 1, dilation.w * (kernel.w - 1) + 1)
    }

    /// Output height and width for an input of `h × w` (PyTorch's floor rule); 0 where the
    /// padded input is smaller than the kernel.
    public func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        let k = effectiveKernel
        // Swift's `/` truncates towards zero, which would turn a span of −1 into one output.
        func positions(_ span: Int, _ stride: Int) -> Int { span < 0 ? 0 : span / stride + 1 }
        return (positions(h + 2 * padding.h - k.h, stride.h), positions(w + 2 * padding.w - k.w, stride.w))
    }

    /// True for a 1×1, stride-1, unpadded window, where im2col is the identity.
    var isPointwise: Bool {
        kernel == (1, 1) && stride == (1, 1) && padding == (0, 0)
    }

    /// The input channel and kernel position of column-matrix row `row` (rows run over
    /// channels, then kernel rows, then kernel columns).
    @inline(__always)
    func tap(_ row: Int) -> (channel: Int, i: Int, j: Int) {
        let (channel, tap) = row.quotientAndRemainder(dividingBy: kernel.h * kernel.w)
        return (channel, tap / kernel.w, tap % kernel.w)
    }

    func validate(_ layer: String) throws {
        guard kernel.h > 0, kernel.w > 0, stride.h > 0, stride.w > 0, padding.h >= 0, padding.w >= 0,
              dilation.h > 0, dilation.w > 0 else {
            throw BLASNetError.invalidArgument(
                "\(layer): kernel \(kernel), stride \(stride), dilation \(dilation) must be positive and padding \(padding) non-negative")
        }
        let sizes = [kernel.h, kernel.w, stride.h, stride.w, padding.h, padding.w, dilation.h, dilation.w]
        guard sizes.allSatisfy({ $0 <= Self.maximumSize }) else {
            throw BLASNetError.invalidArgument(
                "\(layer): kernel \(kernel), stride \(stride), padding \(padding) and dilation \(dilation) must be at most \(Self.maximumSize)")
        }
    }

    /// Past 2¹⁶ a window's sizes are typos, and their products (output sizes, the
    /// effective kernel) would run out of `Int` before any error could name them.
    static let maximumSize = 1 << 16
}

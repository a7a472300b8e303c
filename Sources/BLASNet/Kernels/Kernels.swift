/// Hot loops over raw buffers. Everything outside this folder reads like the math;
/// everything inside it trades clarity for speed and takes pointers, not arrays.
enum Kernels {}

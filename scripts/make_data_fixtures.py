"""Writes the data-layer fixtures into Tests/BLASNetTests/Fixtures/data/.

Tiny files in the real formats with contents given by formulas, so that DataTests can
recompute every expected pixel and label (the formulas there must match these):

- mnist/: IDX files, 28×28 uint8 images and their labels. The training split is there
  raw and gzip-compressed (the same bytes), the test split only gzip-compressed.
  Image i: pixel (r, c) = (i*31 + r*7 + c*3) % 256, label i % 10; the test split's
  image k is image i = 20 + k of the formula.
- cifar-10-batches-bin/: CIFAR-10 binary batches data_batch_1..5.bin (2 records each)
  and test_batch.bin (3 records). Record k (train k = 0..9 in file order, test
  k = 100..102): label (k*3 + 1) % 10, then channel-major 3×32×32 pixels
  (k*17 + ch*50 + y*5 + x*3) % 256.
- cifar100/: CIFAR-100 train.bin (8 records, k = 0..7) and test.bin (3, k = 200..202)
  directly in the directory, with fine_label_names.txt (class_00 … class_99). Record k:
  coarse label k % 20, fine label (k*7) % 100, then pixels as CIFAR-10's.

Only the standard library: no PyTorch or NumPy needed.
"""
import argparse
import gzip
import os
import struct


def idx_images(first, count, rows=28, cols=28):
    header = struct.pack(">I3I", 0x00000803, count, rows, cols)
    pixels = bytes((i * 31 + r * 7 + c * 3) % 256
                   for i in range(first, first + count) for r in range(rows) for c in range(cols))
    return header + pixels


def idx_labels(first, count):
    return struct.pack(">II", 0x00000801, count) + bytes(i % 10 for i in range(first, first + count))


def cifar_record(k, labels):
    pixels = bytes((k * 17 + ch * 50 + y * 5 + x * 3) % 256 for ch in range(3) for y in range(32) for x in range(32))
    return bytes(labels) + pixels


def write(path, data, compressed=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        # mtime=0 keeps the gzip header, and so the committed file, the same on every run.
        f.write(gzip.compress(data, mtime=0) if compressed else data)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(root, "Tests", "BLASNetTests", "Fixtures", "data"))
    out = parser.parse_args().out

    mnist = os.path.join(out, "mnist")
    for compressed in (False, True):
        suffix = ".gz" if compressed else ""
        write(os.path.join(mnist, "train-images-idx3-ubyte" + suffix), idx_images(0, 20), compressed)
        write(os.path.join(mnist, "train-labels-idx1-ubyte" + suffix), idx_labels(0, 20), compressed)
    write(os.path.join(mnist, "t10k-images-idx3-ubyte.gz"), idx_images(20, 10), True)
    write(os.path.join(mnist, "t10k-labels-idx1-ubyte.gz"), idx_labels(20, 10), True)

    cifar10 = os.path.join(out, "cifar-10-batches-bin")
    for b in range(5):
        write(os.path.join(cifar10, f"data_batch_{b + 1}.bin"),
              b"".join(cifar_record(k, [(k * 3 + 1) % 10]) for k in range(2 * b, 2 * b + 2)))
    write(os.path.join(cifar10, "test_batch.bin"), b"".join(cifar_record(k, [(k * 3 + 1) % 10]) for k in range(100, 103)))

    cifar100 = os.path.join(out, "cifar100")
    write(os.path.join(cifar100, "train.bin"), b"".join(cifar_record(k, [k % 20, (k * 7) % 100]) for k in range(8)))
    write(os.path.join(cifar100, "test.bin"), b"".join(cifar_record(k, [k % 20, (k * 7) % 100]) for k in range(200, 203)))
    write(os.path.join(cifar100, "fine_label_names.txt"), "".join(f"class_{i:02d}\n" for i in range(100)).encode())
    print(f"wrote data fixtures to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()

"""Writes the seed corpora of scripts/fuzz into Tests/Fuzz/Corpus/<target>/.

Seeds are small on purpose: libFuzzer mutates them, so each should be a short, valid
file of the format (to reach deep into the reader) or a damaged one that takes a
branch the valid ones miss. Only the standard library.
"""
import argparse
import gzip
import json
import os
import struct


def safetensors(tensors, metadata=None, pad=True):
    """A safetensors file from (name, dtype, shape, raw bytes) in order."""
    header, offset = {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    return with_header(json.dumps(header, separators=(",", ":")), b"".join(t[3] for t in tensors), pad)


def with_header(text, data=b"", pad=True):
    """A safetensors file from its header's JSON text and its data buffer."""
    text = text.encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def idx_images(count, rows, cols):
    pixels = bytes((i * 31 + r * 7 + c * 3) % 256 for i in range(count) for r in range(rows) for c in range(cols))
    return struct.pack(">I3I", 0x00000803, count, rows, cols) + pixels


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def cifar_record(k, labels):
    return bytes(labels) + bytes((k * 17 + ch * 50 + y * 5 + x * 3) % 256
                                 for ch in range(3) for y in range(32) for x in range(32))


def gz(data):
    return gzip.compress(data, mtime=0)


def corpora():
    f32 = struct.pack("<4f", 1.5, -2, 0.25, 3)
    every_dtype = [
        ("f64", "F64", [1], struct.pack("<d", 1.5)),
        ("f16", "F16", [2], bytes([0x00, 0x3E, 0x00, 0xC0])),
        ("bf16", "BF16", [2], bytes([0xC0, 0x3F, 0x00, 0xC0])),
        ("i32", "I32", [1], struct.pack("<i", -3)),
        ("i16", "I16", [1], struct.pack("<h", 250)),
        ("i8", "I8", [1], struct.pack("<b", -1)),
        ("u8", "U8", [3], bytes([1, 2, 3])),
        ("bool", "BOOL", [2], bytes([0, 1])),
        ("empty", "U8", [0, 4], b""),
    ]
    images, labels = idx_images(3, 4, 5), idx_labels([0, 9, 3])
    return {
        "safetensors": {
            "weights-and-metadata": safetensors([("conv.weight", "F32", [2, 2], f32),
                                                 ("bn.num_batches_tracked", "I64", [], struct.pack("<q", 7))],
                                                {"epoch": "3", "arch": "seresnet8"}),
            "every-dtype": safetensors(every_dtype),
            "no-tensors": safetensors([], {"format": "pt"}),
            "unpadded-header": safetensors([("x", "U8", [2], b"\x01\x02")], pad=False),
            "tensors-not-in-offset-order": safetensors([("b", "U8", [1], b"\x02"), ("a", "U8", [1], b"\x01")])
            .replace(b'"data_offsets":[0,1]', b'"data_offsets":[1,2]', 1)
            .replace(b'"data_offsets":[1,2]}}', b'"data_offsets":[0,1]}}', 1),
            "header-length-past-end": struct.pack("<Q", 1 << 20) + b'{"a":{}}',
            # Regression: an end offset near Int.max overflowed when added to the header size.
            "offsets-near-int-max": with_header('{"a":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (2**63 - 1, 2**63 - 1)),
        },
        "idx": {
            "images": images,
            "labels": labels,
            "images.gz": gz(images),
            "labels.gz": gz(labels),
            "labels-two-gzip-members.gz": gz(labels[:5]) + gz(labels[5:]),
            # Inflates to 200,000 labels in a few hundred bytes: reading grows its buffer in several steps.
            "labels-many.gz": gz(idx_labels([7] * 200000)),
            "images-truncated": images[:-3],
            "images-zero-count": idx_images(0, 4, 5),
            "float32-elements": bytes([0, 0, 0x0D, 3]) + images[4:],
            "labels-huge-count": struct.pack(">II", 0x00000801, 0xFFFFFFFF) + bytes([1, 2]),
            "labels-huge-count.gz": gz(struct.pack(">II", 0x00000801, 0xFFFFFFFF) + bytes([1, 2])),
        },
        "cifar": {
            "cifar10-record": cifar_record(0, [3]),
            "cifar100-record": cifar_record(1, [4, 42]),
            "cifar10-two-records": cifar_record(2, [9]) + cifar_record(3, [0]),
            "cifar10-label-out-of-range": cifar_record(4, [10]),
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "Fuzz", "Corpus"))
    out = parser.parse_args().out
    for target, seeds in corpora().items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, target, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()

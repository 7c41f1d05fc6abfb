#!/usr/bin/env python3
# tests/fuzz/make_corpus.py - writes the seed corpora under tests/fuzz/corpus/
# (standard library only). Valid small files plus a few malformed ones per
# target; run once, the output is committed. Re-running rewrites the same bytes.
import gzip, json, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- safetensors
def safetensors(tensors, metadata=None, lie=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if lie:
        lie(header)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
good = {
    "a.weight": ("F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
    "a.bias": ("F32", [3], f32(0.5, -1, 2)),
    "count": ("I64", [], struct.pack("<q", 7)),
    "half": ("F16", [2], struct.pack("<2e", 1.5, -2)),
    "bf": ("BF16", [2], b"\x80\x3f\x00\xc0"),
    "bytes": ("U8", [4], b"\x01\x02\x03\xff"),
    "flags": ("BOOL", [2], b"\x00\x01"),
    "i32": ("I32", [1, 1], struct.pack("<i", -5)),
    "empty": ("F32", [0, 4], b""),
}
put("safetensors", "valid_all_dtypes", safetensors(good, {"nala.config": "model=pico", "k\u00e9y": "v\n\"q\""}))
put("safetensors", "valid_one", safetensors({"x": ("F32", [1], f32(3))}))
put("safetensors", "valid_empty", safetensors({}))
put("safetensors", "lie_offsets", safetensors({"x": ("F32", [2], f32(1, 2))},
                                              lie=lambda h: h["x"].update(data_offsets=[0, 12])))
put("safetensors", "lie_shape", safetensors({"x": ("F32", [2], f32(1, 2))}, lie=lambda h: h["x"].update(shape=[3])))
put("safetensors", "overlap", safetensors({"x": ("F32", [2], f32(1, 2)), "y": ("F32", [1], f32(3))},
                                          lie=lambda h: h["y"].update(data_offsets=[4, 8])))
v = safetensors({"x": ("F32", [2], f32(1, 2))})
put("safetensors", "truncated", v[: len(v) - 3])
put("safetensors", "huge_header_len", struct.pack("<Q", 1 << 40) + v[8:])
put("safetensors", "bad_json", struct.pack("<Q", 8) + b'{"x":[1,')
with open(os.path.join(HERE, "..", "data", "reference.safetensors"), "rb") as f:
    put("safetensors", "python_written", f.read())


# ---------------------------------------------------------------- IDX
def idx_images(n, h, w, magic=0x803):
    return struct.pack(">IIII", magic, n, h, w) + bytes((i * 7 + 3) % 256 for i in range(n * h * w))


def idx_labels(labels):
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def idx_input(mode, images, labels):
    return bytes([mode]) + struct.pack(">I", len(images)) + images + labels


im, lb = idx_images(3, 4, 5), idx_labels([1, 9, 0])
put("idx", "valid_memory", idx_input(0, im, lb))
put("idx", "valid_memory_classes", idx_input(2, im, lb))
put("idx", "valid_files_gz", idx_input(1, gzip.compress(im, mtime=0), gzip.compress(lb, mtime=0)))
put("idx", "valid_files_plain", idx_input(3, im, lb))
put("idx", "truncated_pixels", idx_input(0, im[:-5], lb))
put("idx", "truncated_gz", idx_input(1, gzip.compress(im, mtime=0)[:30], lb))
put("idx", "wrong_magic", idx_input(0, idx_images(3, 4, 5, magic=0x801), lb))
put("idx", "label_out_of_range", idx_input(2, im, idx_labels([1, 10, 0])))
put("idx", "count_mismatch", idx_input(0, im, idx_labels([1, 2])))
put("idx", "zero_images", idx_input(0, idx_images(0, 28, 28), idx_labels([])))

# ---------------------------------------------------------------- CIFAR-10
rec = lambda label, seed: bytes([label]) + bytes((seed + i) % 256 for i in range(3072))
put("cifar", "valid_one", rec(3, 0))
put("cifar", "valid_two", rec(0, 5) + rec(9, 11))
put("cifar", "truncated", rec(3, 0)[:-100])
put("cifar", "bad_label", rec(10, 0))
put("cifar", "empty", b"")


# ---------------------------------------------------------------- images
def png(w, h, colour_type, bit_depth, pixels_row, interlace=0, plte=None):
    raw = b"".join(b"\x00" + pixels_row(y) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, interlace))
    if plte:
        out += chunk(b"PLTE", plte)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def bmp24(w, h):
    row = bytes((x * 40) % 256 for x in range(w * 3))
    row += b"\x00" * ((4 - len(row) % 4) % 4)
    data = row * h
    hdr = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    return hdr + info + data


# byte 0: bit 0 = 3 channels, bits 1..5 = target size - 1
rgb = png(6, 5, 2, 8, lambda y: bytes((x * 30 + y) % 256 for x in range(18)))
grey = png(7, 3, 0, 8, lambda y: bytes(range(y, y + 7)))
rgba = png(4, 4, 6, 8, lambda y: bytes((x * 17) % 256 for x in range(16)))
grey16 = png(3, 3, 0, 16, lambda y: b"\x12\x34" * 3)
rgb16 = png(2, 2, 2, 16, lambda y: b"\xff\xff\x00\x00\x80\x00" * 2)
pal = png(3, 2, 3, 8, lambda y: bytes([0, 1, 2]), plte=b"\xff\x00\x00\x00\xff\x00\x00\x00\xff")
interlaced = png(5, 5, 2, 8, lambda y: bytes(range(15)), interlace=1)
with open(os.path.join(HERE, "..", "data", "solid_200_100_50.jpg"), "rb") as f:
    jpg = f.read()
put("image", "png_rgb_to3_s4", bytes([1 | (3 << 1)]) + rgb)
put("image", "png_rgb_to1_s8", bytes([0 | (7 << 1)]) + rgb)
put("image", "png_grey_to3_s2", bytes([1 | (1 << 1)]) + grey)
put("image", "png_rgba_to3_s4", bytes([1 | (3 << 1)]) + rgba)
put("image", "png_grey16_to3_s3", bytes([1 | (2 << 1)]) + grey16)
put("image", "png_rgb16_to1_s1", bytes([0]) + rgb16)
put("image", "png_palette_to3_s2", bytes([1 | (1 << 1)]) + pal)
put("image", "png_interlaced_to3_s5", bytes([1 | (4 << 1)]) + interlaced)
put("image", "jpeg_to3_s4", bytes([1 | (3 << 1)]) + jpg)
put("image", "jpeg_to1_s16", bytes([0 | (15 << 1)]) + jpg)
put("image", "bmp_to3_s4", bytes([1 | (3 << 1)]) + bmp24(5, 3))
put("image", "png_truncated", bytes([1 | (3 << 1)]) + rgb[: len(rgb) // 2])
put("image", "jpeg_truncated", bytes([1 | (3 << 1)]) + jpg[:200])
put("image", "png_huge_claim", bytes([1]) + png(1, 1, 2, 8, lambda y: b"\x00\x00\x00")[:16]
    + struct.pack(">II", 100000, 100000) + b"\x08\x02\x00\x00\x00" + b"\x00" * 4)
put("image", "text_file", bytes([1]) + b"hello, not an image\n")

# ---------------------------------------------------------------- command line
cli = {
    "valid_short": ["--model", "pico", "--epochs", "3", "--subset", "1024", "--eval-subset", "256",
                    "--batch-size", "64", "--threads", "2", "--seed", "3", "--out", "/tmp/x"],
    "valid_eq_forms": ["--lr=2e-3", "--warmup-epochs=0.5", "--hflip", "--erase", "0.25", "--crop-pad=2",
                       "--optimizer", "sgd", "--momentum", "0.8", "--data", "folder", "--data-dir", "d",
                       "--img-size", "32", "--channels", "3", "--skip-bad"],
    "valid_resume": ["--resume", "runs/a", "--skip-nonfinite", "--debug-nan-at", "5", "--max-steps", "10",
                     "--clip-grad", "1.0", "--device", "cpu", "--label-smoothing", "0"],
    "bad_unknown": ["--no-such-flag"],
    "bad_missing_value": ["--epochs"],
    "bad_negative": ["--batch-size", "-3"],
    "bad_range": ["--epochs", "0", "--lr", "1e99"],
    "bad_twice": ["--seed", "1", "--seed=2"],
    "bad_flag_value": ["--hflip=yes"],
    "bad_min_lr": ["--lr", "1e-4", "--min-lr", "1e-3"],
    "bad_resume_out": ["--resume", "a", "--out", "b"],
    "bad_img_size": ["--img-size", "2"],
    "bad_choice": ["--model", "huge", "--optimizer", "adam"],
    "help": ["--help"],
}
for name, words in cli.items():
    put("cli", name, "\n".join(words).encode())

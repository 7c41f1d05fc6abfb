#!/usr/bin/env python3
"""examples/classify.py - classify images with nala from Python, through ctypes
over libnala.so (`make shared`). Needs nothing but Python's standard library.

    make shared
    python3 examples/classify.py --lib build/release-nocuda/libnala.so WEIGHTS \
        [--config NAME] [--logits OUT.f32] (--raw FILE.f32 N C H W | IMAGE.pgm ...)

--raw: N float32 images of C x H x W (NCHW, already normalised). PGM/PPM
(binary P5/P6, 8-bit) files are scaled to [0, 1] and normalised with the mean
and standard deviation stored in the model file. Prints the top-5 classes of
each image; --logits writes the raw logits (float32, n x classes).
"""
import argparse
import array
import ctypes
import math
import sys


def load_library(path):
    lib = ctypes.CDLL(path)
    c_float_p = ctypes.POINTER(ctypes.c_float)
    lib.nala_model_load.restype = ctypes.c_void_p
    lib.nala_model_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.nala_model_classes.restype = ctypes.c_int
    lib.nala_model_classes.argtypes = [ctypes.c_void_p]
    lib.nala_model_channels.restype = ctypes.c_int
    lib.nala_model_channels.argtypes = [ctypes.c_void_p]
    lib.nala_model_forward.restype = ctypes.c_int
    lib.nala_model_forward.argtypes = [ctypes.c_void_p, c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_int, c_float_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.nala_model_class_name.restype = ctypes.c_char_p
    lib.nala_model_class_name.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.nala_model_normalization.restype = ctypes.c_int
    lib.nala_model_normalization.argtypes = [ctypes.c_void_p, c_float_p, c_float_p]
    lib.nala_model_free.restype = None
    lib.nala_model_free.argtypes = [ctypes.c_void_p]
    return lib


class Model:
    def __init__(self, lib, weights, config=None):
        self.lib = lib
        err = ctypes.create_string_buffer(512)
        self.handle = lib.nala_model_load(weights.encode(), config.encode() if config else None, err, len(err))
        if not self.handle:
            raise RuntimeError(err.value.decode())
        self.classes = lib.nala_model_classes(self.handle)
        self.channels = lib.nala_model_channels(self.handle)

    def close(self):
        if self.handle:
            self.lib.nala_model_free(self.handle)
            self.handle = None

    def class_name(self, k):
        name = self.lib.nala_model_class_name(self.handle, k)
        return name.decode() if name else "class %d" % k

    def normalization(self):
        mean = (ctypes.c_float * self.channels)()
        std = (ctypes.c_float * self.channels)()
        if self.lib.nala_model_normalization(self.handle, mean, std) != 0:
            return None
        return list(mean), list(std)

    def forward(self, images, n, c, h, w):
        """images: array('f') of n*c*h*w values; returns array('f') of n*classes logits."""
        if len(images) != n * c * h * w:
            raise ValueError("expected %d values, got %d" % (n * c * h * w, len(images)))
        inp = (ctypes.c_float * len(images)).from_buffer(images)
        out = (ctypes.c_float * (n * self.classes))()
        err = ctypes.create_string_buffer(512)
        if self.lib.nala_model_forward(self.handle, inp, n, c, h, w, out, err, len(err)) != 0:
            raise RuntimeError(err.value.decode())
        return array.array("f", out)


def read_pnm(path, model):
    with open(path, "rb") as f:
        data = f.read()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval, separated by whitespace
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic not in (b"P5", b"P6") or maxval != 255:
        raise ValueError("%s: not a binary 8-bit PGM (P5) or PPM (P6) image" % path)
    c = 1 if magic == b"P5" else 3
    px = data[pos:pos + c * h * w]
    if len(px) != c * h * w:
        raise ValueError("%s: file ends before its pixels do" % path)
    norm = model.normalization() or ([0.0] * c, [1.0] * c)
    out = array.array("f", bytes(4 * c * h * w))
    for ch in range(c):  # interleaved pixels -> planar, normalised
        m, s = norm[0][ch], norm[1][ch]
        for i in range(h * w):
            out[ch * h * w + i] = (px[i * c + ch] / 255.0 - m) / s
    return out, c, h, w


def top5(model, logits, label):
    mx = max(logits)
    exps = [math.exp(v - mx) for v in logits]
    total = sum(exps)
    order = sorted(range(len(logits)), key=lambda k: -logits[k])[:5]
    print(label + ":" + "".join("  %s %.1f%%" % (model.class_name(k), 100 * exps[k] / total) for k in order))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build/release-nocuda/libnala.so")
    ap.add_argument("--config")
    ap.add_argument("--logits")
    ap.add_argument("--raw", nargs=5, metavar=("FILE", "N", "C", "H", "W"))
    ap.add_argument("weights")
    ap.add_argument("images", nargs="*")
    a = ap.parse_intermixed_args()
    if not a.raw and not a.images:
        ap.error("give --raw FILE N C H W or image files")
    model = Model(load_library(a.lib), a.weights, a.config)
    all_logits = array.array("f")
    try:
        if a.raw:
            n, c, h, w = (int(v) for v in a.raw[1:])
            images = array.array("f")
            with open(a.raw[0], "rb") as f:
                images.frombytes(f.read(4 * n * c * h * w))
            logits = model.forward(images, n, c, h, w)
            for i in range(n):
                top5(model, logits[i * model.classes:(i + 1) * model.classes], "image %d" % i)
            all_logits.extend(logits)
        for path in a.images:
            image, c, h, w = read_pnm(path, model)
            logits = model.forward(image, 1, c, h, w)
            top5(model, logits, path)
            all_logits.extend(logits)
    except (RuntimeError, ValueError) as e:
        print("classify.py: %s" % e, file=sys.stderr)
        return 1
    finally:
        model.close()
    if a.logits:
        with open(a.logits, "wb") as f:
            all_logits.tofile(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An independent NumPy/SciPy forward pass of the paper's Theano DCGANs, in float64.

It works on the raw arrays in the original's unpack order and shares nothing with gan_features
(no torch at all), so agreement with our imported PyTorch models proves the import. The
semantics are those of Newmu/dcgan_code (lib/ops.py, svhn/svhn_semisup_analysis.py,
imagenet/load_pretrained.py):

* ``dnn_conv`` (cuDNN, 'conv' mode): a TRUE convolution (kernel mirrored), zero padding, stride;
* ``deconv``: the gradient w.r.t. the input of that convolution, output ``stride`` times larger;
* ``batchnorm(X, g, b)``: batch mean and biased batch variance (over N, H, W; over N for 2-D),
  ``(X - mean) / sqrt(var + 1e-8) * g + b``;
* LeakyReLU 0.2 in D, ReLU in G, sigmoid on ``dot(flatten(h), wy)``, tanh on G's output.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import signal

EPS = 1e-8
LEAK = 0.2

# The original models, literally from the original scripts: (strides of the D convs, padding) and
# (strides of the G deconvs after the dense layer, padding, channels of the 4x4 map after it).
SVHN_D = dict(strides=(2, 2, 2), pad=2)
SVHN_G = dict(strides=(2, 2, 2), pad=2, base=256)
IMAGENET_D = dict(strides=(1, 2, 1, 2, 1, 2), pad=1)
IMAGENET_G = dict(strides=(2, 1, 2, 1, 2, 1), pad=1, base=512)


def _bn_layers(shapes):
    """w2, g2, b2, w3, ...: each (de)conv weight, then the scale and shift of the batch-norm after it."""
    out = []
    for i, (shape, channels) in enumerate(shapes, 2):
        out += [(f"w{i}", shape), (f"g{i}", (channels,)), (f"b{i}", (channels,))]
    return out


def _d(c_in, channels, k):  # conv weights are (out, in, k, k)
    return [((o, i, k, k), o) for i, o in zip([c_in] + channels[:-1], channels)]


def _g(channels, k):  # deconv weights are (in, out, k, k)
    return [((i, o, k, k), o) for i, o in zip(channels[:-1], channels[1:])]


# The parameter files of the released models, as (name, shape) in file order = argument order of
# the original discrim(X, w, w2, g2, b2, ..., wy) and gen(Z, w, g, b, w2, ..., wx).
SVHN_FILES = {
    "discrim": [("w", (64, 3, 5, 5)), *_bn_layers(_d(64, [128, 256], 5)), ("wy", (256 * 16, 1))],
    "gen": [("w", (100, 256 * 16)), ("g", (256 * 16,)), ("b", (256 * 16,)),
            *_bn_layers(_g([256, 128, 64], 5)), ("wx", (64, 3, 5, 5))],
}
IMAGENET_FILES = {
    "discrim": [("w", (128, 3, 3, 3)), *_bn_layers(_d(128, [128, 256, 256, 512, 512], 3)), ("wy", (512 * 16, 1))],
    "gen": [("w", (256, 512 * 16)), ("g", (512 * 16,)), ("b", (512 * 16,)),
            *_bn_layers(_g([512, 512, 256, 256, 128, 128], 3)), ("wx", (128, 3, 3, 3))],
}


def random_params(layout, rng: np.random.Generator) -> list[np.ndarray]:
    """Plausible float32 weights for a layout: kernels N(0, 0.05), BN scales ~1, shifts ~0."""
    make = {"w": lambda shape: rng.normal(0, 0.05, shape),
            "g": lambda shape: rng.uniform(0.5, 1.5, shape),
            "b": lambda shape: rng.normal(0, 0.2, shape)}
    return [make[name[0]](shape).astype(np.float32) for name, shape in layout]


def load_params(directory: str | Path, kind: str) -> list[np.ndarray | None]:
    """The arrays of ``<epoch>_<kind>_params.jl_NN.npy`` by NN (from 01), as float64; None for gaps."""
    found = {}
    for path in Path(directory).iterdir():
        if match := re.fullmatch(rf"\d+_{kind}_params\.jl_(\d+)\.npy", path.name):
            found[int(match[1])] = np.load(path).astype(np.float64)
    return [found.get(i) for i in range(1, max(found) + 1)]


def true_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """cuDNN 'conv' mode: x (N, C, H, W), w (O, C, k, k) -> (N, O, H', W'), by its definition

        y[n, o, i, j] = sum_{c, a, b} xp[n, c, i*s + a, j*s + b] * w[o, c, k-1-a, k-1-b]

    (xp: x zero-padded; the kernel index k-1-a is the mirror that makes it a true convolution).
    The tests pin it to scipy.signal's textbook convolution (``true_conv_scipy``), which is too
    slow to run the full models with.
    """
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # windows[n, c, i, j, a, b] = xp[n, c, i*s + a, j*s + b]
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("ncijab,ocab->noij", windows, w[:, :, ::-1, ::-1], optimize=True)


def true_conv_scipy(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The same through scipy.signal.convolve2d (mirrors the kernel), one channel pair at a time."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.array([[sum(signal.convolve2d(xp[n, c], w[o, c], mode="valid") for c in range(x.shape[1]))
                     for o in range(w.shape[0])] for n in range(x.shape[0])])
    return out[:, :, ::stride, ::stride]  # stride s keeps every s-th stride-1 output, from the first


def true_conv_grad_input(g: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The original's ``deconv``: d(sum(true_conv(x, w) * g)) / dx for x of size ``stride`` * g's.

    With y[n,o,i,j] = sum_{c,a,b} xp[n, c, i*s + a, j*s + b] * w[o, c, k-1-a, k-1-b] (the true
    convolution), every output position scatters g[n,o,i,j] * mirrored kernel back onto the
    padded input; the padding is then cut off. g (N, O, h, w), w (O, C, k, k) -> (N, C, h*s, w*s).
    """
    n, _, h, wd = g.shape
    k = w.shape[-1]
    height, width = h * stride, wd * stride
    # contributions[n, c, i, j, a, b] = sum_o g[n, o, i, j] * w[o, c, k-1-a, k-1-b] lands on xp[n, c, i*s+a, j*s+b]
    contributions = np.einsum("noij,ocab->ncijab", g, w[:, :, ::-1, ::-1], optimize=True)
    xp = np.zeros((n, w.shape[1], max(height + 2 * pad, (h - 1) * stride + k),
                   max(width + 2 * pad, (wd - 1) * stride + k)))
    for a in range(k):
        for b in range(k):
            xp[:, :, a:a + stride * h:stride, b:b + stride * wd:stride] += contributions[..., a, b]
    return xp[:, :, pad:pad + height, pad:pad + width]


def batchnorm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * g.reshape(shape) + b.reshape(shape)


def lrelu(x):
    return np.where(x > 0, x, LEAK * x)


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def discriminator(images, params, strides, pad, blocks=None):
    """``discrim(X, w, w2, g2, b2, ..., wy)``: (activations of the first ``blocks`` blocks, logits).

    Logits (the argument of the sigmoid) come only when every block ran; params may end early
    (or hold None past the blocks asked for) for incomplete models.
    """
    blocks = len(strides) if blocks is None else blocks
    h = lrelu(true_conv(np.asarray(images, np.float64), params[0], strides[0], pad))
    outputs = [h]
    for i in range(1, blocks):
        w, g, b = params[3 * i - 2: 3 * i + 1]
        h = lrelu(batchnorm(true_conv(h, w, strides[i], pad), g, b))
        outputs.append(h)
    if blocks < len(strides):
        return outputs, None
    wy = params[3 * len(strides) - 2]
    return outputs, (h.reshape(len(h), -1) @ wy)[:, 0]


def generator(latents, params, strides, pad, base):
    """``gen(Z, w, g, b, w2, g2, b2, ..., wx)``: images in [-1, 1], shape (N, 3, H, W)."""
    w, g, b = params[:3]
    h = relu(batchnorm(np.asarray(latents, np.float64) @ w, g, b)).reshape(len(latents), base, 4, 4)
    for i, stride in enumerate(strides[:-1]):
        w, g, b = params[3 + 3 * i: 6 + 3 * i]
        h = relu(batchnorm(true_conv_grad_input(h, w, stride, pad), g, b))
    return np.tanh(true_conv_grad_input(h, params[-1], strides[-1], pad))

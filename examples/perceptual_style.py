"""Neural style loss (Gatys et al. 2016; the PyTorch neural-transfer tutorial): Gram matrices of
the features of a small frozen conv net are matched between the image being optimised and a fixed
style image, summed over layers. The naive version runs the frozen net on the style image at every
call although nothing on that branch changes; removing it is the benchmark's job (it builds the
"precomputed style branch" expert from ``CASE["target_args"]``), so ``expert`` here is the same
computation. The loop over layers is kept: the layers' features have different shapes."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "image [1, 3, 16, 16], 3->4->8 channels",
              "bench": "image [1, 3, 96, 96], 3->16->32 channels"},
    "fixed_target": True,
    "target_args": ("style_image", "w1", "b1", "w2", "b2"),
}


def gram(feat):
    b, c, h, w = feat.shape
    f = feat.view(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def features(x, w1, b1, w2, b2):
    h1 = F.relu(F.conv2d(x, w1, b1, padding=1))
    h2 = F.relu(F.conv2d(F.max_pool2d(h1, 2), w2, b2, padding=1))
    return [h1, h2]


def naive(image, style_image, w1, b1, w2, b2):
    loss = 0
    for f_img, f_style in zip(features(image, w1, b1, w2, b2), features(style_image, w1, b1, w2, b2)):
        loss = loss + F.mse_loss(gram(f_img), gram(f_style))
    return loss


def expert(image, style_image, w1, b1, w2, b2):
    # Same computation on purpose (see the module docstring): there is no loop to vectorize.
    return naive(image, style_image, w1, b1, w2, b2)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    hw, c1, c2 = {"small": (16, 4, 8), "bench": (96, 16, 32)}[size]
    image = torch.rand(1, 3, hw, hw, generator=g, dtype=dtype).requires_grad_()
    style_image = torch.rand(1, 3, hw, hw, generator=g, dtype=dtype)
    # Frozen feature extractor: plain tensors without grad, He-initialised.
    w1 = torch.randn(c1, 3, 3, 3, generator=g, dtype=dtype) * (2 / 27) ** 0.5
    b1 = torch.zeros(c1, dtype=dtype)
    w2 = torch.randn(c2, c1, 3, 3, generator=g, dtype=dtype) * (2 / (9 * c1)) ** 0.5
    b2 = torch.zeros(c2, dtype=dtype)
    return image, style_image, w1, b1, w2, b2


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)

"""Deep supervision for segmentation (U-Net++ / nnU-Net / PSPNet auxiliary heads): the model
returns a list of logit maps at full, 1/2 and 1/4 resolution, the label map is resized to each
head's size inside the loss, and the per-head cross entropies are summed with weights halving per
level. The loop over heads legitimately stays a loop: the heads have different shapes. The
expert only replaces the float round trip through ``F.interpolate(mode="nearest")`` with the
equivalent strided slice of the integer labels."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "3 heads [2, 3, 16/8/4, 16/8/4]", "bench": "3 heads [8, 21, 256/128/64, 256/128/64]"},
}


def naive(heads, target):
    loss = 0
    for level, head in enumerate(heads):
        t = F.interpolate(target[:, None].float(), size=head.shape[-2:], mode="nearest")
        loss = loss + 0.5 ** level * F.cross_entropy(head, t[:, 0].long())
    return loss


def expert(heads, target):
    # Nearest downsampling by an integer factor s reads source pixel s * i, i.e. target[::s, ::s].
    loss = 0
    for level, head in enumerate(heads):
        s = target.shape[-1] // head.shape[-1]
        loss = loss + 0.5 ** level * F.cross_entropy(head, target[:, ::s, ::s])
    return loss


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 3, 16), "bench": (8, 21, 256)}[size]
    heads = [torch.randn(b, c, hw // s, hw // s, generator=g, dtype=dtype).requires_grad_()
             for s in (1, 2, 4)]
    target = torch.randint(0, c, (b, hw, hw), generator=g)
    return heads, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)

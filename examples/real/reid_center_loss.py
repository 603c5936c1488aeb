"""Center loss as michuanhaohao/reid-strong-baseline writes it in layers/center_loss.py (the
"bag of tricks" re-ID baseline): an ``nn.Module`` holding the class centers, an ``assert`` on the
batch sizes, the feature-to-center distance matrix built with an in-place ``addmm_``, a boolean
label mask against ``torch.arange(num_classes)``, then a loop over samples picking each row's
masked entry, clamping it, and ``torch.cat`` of the list before the mean."""
import torch
from torch import nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 features of dim 8, 6 classes", "bench": "256 features of dim 2048, 751 classes"},
    "source": "michuanhaohao/reid-strong-baseline:layers/center_loss.py",
    "field": "re-identification",
    "target_args": ("labels",),
}


class CenterLoss(nn.Module):

    def __init__(self, centers, use_gpu=False):
        super(CenterLoss, self).__init__()
        self.num_classes, self.feat_dim = centers.shape
        self.use_gpu = use_gpu
        self.centers = centers  # nn.Parameter(torch.randn(num_classes, feat_dim)) in the repository

    def forward(self, x, labels):
        assert x.size(0) == labels.size(0), "features.size(0) is not equal to labels.size(0)"

        batch_size = x.size(0)
        distmat = torch.pow(x, 2).sum(dim=1, keepdim=True).expand(batch_size, self.num_classes) + \
            torch.pow(self.centers, 2).sum(dim=1, keepdim=True).expand(self.num_classes, batch_size).t()
        distmat.addmm_(x, self.centers.t(), beta=1, alpha=-2)

        classes = torch.arange(self.num_classes).long()
        if self.use_gpu:
            classes = classes.cuda()
        labels = labels.unsqueeze(1).expand(batch_size, self.num_classes)
        mask = labels.eq(classes.expand(batch_size, self.num_classes))

        dist = []
        for i in range(batch_size):
            value = distmat[i][mask[i]]
            value = value.clamp(min=1e-12, max=1e+12)  # for numerical stability
            dist.append(value)
        dist = torch.cat(dist)
        loss = dist.mean()
        return loss


def naive(x, labels, centers):
    return CenterLoss(centers)(x, labels)


def expert(x, labels, centers):
    # only the label's column of the distance matrix is used: compute just those entries
    c = centers[labels]
    dist = x.pow(2).sum(dim=1) + c.pow(2).sum(dim=1) - 2 * (x * c).sum(dim=1)
    return dist.clamp(min=1e-12, max=1e+12).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 8, 6), "bench": (256, 2048, 751)}[size]
    x = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    centers = torch.randn(c, d, generator=g, dtype=dtype).requires_grad_()
    return x, labels, centers

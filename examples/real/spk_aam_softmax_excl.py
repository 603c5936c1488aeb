"""Angular-margin softmax (ArcFace, with SphereFace and CosFace switches) as
cvqluu/Angular-Penalty-Softmax-Losses-Pytorch writes it in loss_functions.py: an ``nn.Module`` with
an ``nn.Linear`` classifier, ``assert`` on tensor label ranges, a ``for W in
self.fc.parameters(): W = F.normalize(W)`` loop whose rebinding has no effect (the class weights
stay unnormalized, as in the repository), and the non-target logits gathered by a per-sample list
comprehension ``torch.cat((wf[i, :y], wf[i, y+1:]))``."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 embeddings of dim 8, 5 classes", "bench": "256 embeddings of dim 256, 1000 classes"},
    "source": "cvqluu/Angular-Penalty-Softmax-Losses-Pytorch:loss_functions.py",
    "field": "speaker/face verification",
    "target_args": ("labels",),
}


class AngularPenaltySMLoss(nn.Module):
    def __init__(self, in_features, out_features, loss_type="arcface", eps=1e-7, s=None, m=None):
        super(AngularPenaltySMLoss, self).__init__()
        loss_type = loss_type.lower()
        assert loss_type in ["arcface", "sphereface", "cosface"]
        if loss_type == "arcface":
            self.s = 64.0 if not s else s
            self.m = 0.5 if not m else m
        if loss_type == "sphereface":
            self.s = 64.0 if not s else s
            self.m = 1.35 if not m else m
        if loss_type == "cosface":
            self.s = 30.0 if not s else s
            self.m = 0.4 if not m else m
        self.loss_type = loss_type
        self.in_features = in_features
        self.out_features = out_features
        self.fc = nn.Linear(in_features, out_features, bias=False)
        self.eps = eps

    def forward(self, x, labels):
        assert len(x) == len(labels)
        assert torch.min(labels) >= 0
        assert torch.max(labels) < self.out_features

        for W in self.fc.parameters():
            W = F.normalize(W, p=2, dim=1)

        x = F.normalize(x, p=2, dim=1)
        wf = self.fc(x)
        if self.loss_type == "cosface":
            numerator = self.s * (torch.diagonal(wf.transpose(0, 1)[labels]) - self.m)
        if self.loss_type == "arcface":
            numerator = self.s * torch.cos(torch.acos(torch.clamp(
                torch.diagonal(wf.transpose(0, 1)[labels]), -1.0 + self.eps, 1 - self.eps)) + self.m)
        if self.loss_type == "sphereface":
            numerator = self.s * torch.cos(self.m * torch.acos(torch.clamp(
                torch.diagonal(wf.transpose(0, 1)[labels]), -1.0 + self.eps, 1 - self.eps)))

        excl = torch.cat([torch.cat((wf[i, :y], wf[i, y + 1:])).unsqueeze(0) for i, y in enumerate(labels)], dim=0)
        denominator = torch.exp(numerator) + torch.sum(torch.exp(self.s * excl), dim=1)
        L = numerator - torch.log(denominator)
        return -torch.mean(L)


def naive(x, labels, weight):
    criterion = AngularPenaltySMLoss(weight.shape[1], weight.shape[0], loss_type="arcface")
    # the classifier's weight is the caller's leaf (a trained nn.Parameter in the repository)
    return torch.func.functional_call(criterion, {"fc.weight": weight}, (x, labels))


S, M, EPS = 64.0, 0.5, 1e-7  # the module's ArcFace defaults


def expert(x, labels, weight):
    wf = F.linear(F.normalize(x, p=2, dim=1), weight)
    target = wf.gather(1, labels[:, None]).squeeze(1)
    numerator = S * torch.cos(torch.acos(target.clamp(-1.0 + EPS, 1 - EPS)) + M)
    others = torch.exp(S * wf).masked_fill(F.one_hot(labels, wf.shape[1]).bool(), 0).sum(dim=1)
    return -(numerator - torch.log(torch.exp(numerator) + others)).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 8, 5), "bench": (256, 256, 1000)}[size]
    x = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    # nn.Linear's initialisation: uniform in +-1/sqrt(in_features)
    weight = ((torch.rand(c, d, generator=g, dtype=dtype) * 2 - 1) / d ** 0.5).requires_grad_()
    return x, labels, weight

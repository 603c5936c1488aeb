"""ProxyNCA loss as Confusezius/Deep-Metric-Learning-Baselines writes it in losses.py: an
``nn.Module`` holding the class proxies as a parameter and ``torch.arange`` of all classes,
that scales normalised embeddings and proxies by 3, gathers each sample's own proxy with a list
comprehension of ``PROXIES[label:label+1, :]`` slices, builds each sample's negative class list
with ``torch.cat`` of the class range around its label, gathers those proxies in a second
comprehension, and takes squared distances and a ``logsumexp`` over the negatives."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "12 embeddings of dim 8, 5 proxies", "bench": "112 embeddings of dim 128, 100 proxies"},
    "source": "Confusezius/Deep-Metric-Learning-Baselines:losses.py",
    "field": "metric learning",
    "target_args": ("labels",),
}


class ProxyNCALoss(torch.nn.Module):
    def __init__(self, num_proxies, embedding_dim):
        super(ProxyNCALoss, self).__init__()
        self.num_proxies = num_proxies
        self.embedding_dim = embedding_dim
        self.PROXIES = torch.nn.Parameter(torch.randn(num_proxies, self.embedding_dim) / 8)
        self.all_classes = torch.arange(num_proxies)

    def forward(self, batch, labels):
        # the factor 3 is the repository's ("seems arbitrary, but helps the actual training")
        batch = 3 * torch.nn.functional.normalize(batch, dim=1)
        PROXIES = 3 * torch.nn.functional.normalize(self.PROXIES, dim=1)
        # group the required proxies
        pos_proxies = torch.stack([PROXIES[pos_label:pos_label + 1, :] for pos_label in labels])
        neg_proxies = torch.stack([torch.cat([self.all_classes[:class_label], self.all_classes[class_label + 1:]])
                                   for class_label in labels])
        neg_proxies = torch.stack([PROXIES[neg_labels, :] for neg_labels in neg_proxies])
        # proxy distances
        dist_to_neg_proxies = torch.sum((batch[:, None, :] - neg_proxies).pow(2), dim=-1)
        dist_to_pos_proxies = torch.sum((batch[:, None, :] - pos_proxies).pow(2), dim=-1)
        negative_log_proxy_nca_loss = torch.mean(dist_to_pos_proxies[:, 0] + torch.logsumexp(-dist_to_neg_proxies, dim=1))
        return negative_log_proxy_nca_loss


def naive(batch, labels, proxies):
    criterion = ProxyNCALoss(*proxies.shape)
    return torch.func.functional_call(criterion, {"PROXIES": proxies}, (batch, labels))


def expert(batch, labels, proxies):
    # All proxies against all samples; the own proxy is masked out of the logsumexp.
    batch = 3 * torch.nn.functional.normalize(batch, dim=1)
    proxies = 3 * torch.nn.functional.normalize(proxies, dim=1)
    dist = (batch[:, None, :] - proxies[None]).pow(2).sum(dim=-1)              # [B, C]
    own = torch.nn.functional.one_hot(labels, proxies.shape[0]).bool()
    return (dist[own] + torch.logsumexp((-dist).masked_fill(own, float("-inf")), dim=1)).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (12, 8, 5), "bench": (112, 128, 100)}[size]
    batch = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    proxies = (torch.randn(c, d, generator=g, dtype=dtype) / 8).requires_grad_()
    return batch, labels, proxies

"""Loops that call a method of their own object, for ``test_distribute_methods``: the method is
inlined for distribution, the loss module it calls is known from what a subclass passes."""
import torch
import torch.nn as nn


class Scorer:
    def __init__(self, name, criterion):
        self.name = name
        self.criterion = criterion
        self.total = 0
        self.count = 0

    def score_all(self, outputs, targets):
        for step, out in enumerate(outputs):
            self._score(out.view(out.shape[0], -1), targets[step])
        return self.total

    def _score(self, out, target):
        raise NotImplementedError


class NLLScorer(Scorer):
    def __init__(self, weight):
        super().__init__("nll", nn.NLLLoss(weight=weight))

    def _score(self, out, target):
        """Adds one step's loss."""
        self.total += self.criterion(out, target)
        self.count += 1


def nll_scores(outputs, targets):
    weight = outputs[0].new_ones(outputs[0].shape[1])
    scorer = NLLScorer(weight)
    scorer.score_all(outputs, targets)
    return scorer.total


class Branchy:
    """A method with a branch is not inlined: the loop stays whole."""

    def __init__(self):
        self.criterion = nn.MSELoss()
        self.total = 0

    def run(self, x, y):
        for i in range(len(x)):
            self._add(x[i], y[i])
        return self.total

    def _add(self, a, b):
        if a.sum() > 0:
            self.total += self.criterion(a, b)


class StopScorer(NLLScorer):
    """A loop a mask's zero ends (``test_distribute_break``): its iterations counted first."""

    def score_until(self, outputs, targets, mask):
        for step in range(len(outputs)):
            if mask[step] == 0:
                break
            self._score(outputs[step], targets[step])
        return self.total

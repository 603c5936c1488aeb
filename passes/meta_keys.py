"""Keys of the facts FX passes store in ``node.meta``: defined here and nowhere else."""

# bool on placeholders: the input requires grad (a parameter, or a tensor with requires_grad).
REQUIRES_GRAD = "optimize_loss.requires_grad"
# str on every node: "grad" (depends on a requires_grad input) or "target" (inputs without grad
# and constants only).
GRAD_DEPENDENCE = "optimize_loss.grad_dependence"
# The user's file:line a node came from, when known.
USER_LOCATION = "optimize_loss.user_location"

"""Keys of the facts FX passes store in ``node.meta``: defined here and nowhere else."""

# bool on placeholders: the input requires grad (a parameter, or a tensor with requires_grad).
REQUIRES_GRAD = "optimize_loss.requires_grad"
# str on every node: "grad" (depends on a requires_grad input) or "target" (inputs without grad
# and constants only).
GRAD_DEPENDENCE = "optimize_loss.grad_dependence"
# The user's file:line a node came from, when known.
USER_LOCATION = "optimize_loss.user_location"
# bool on every node after hoist_target_subgraph ran: the node was moved into the
# ``target_transform`` submodule (runs under no_grad, its outputs cached across calls). After that
# pass the nodes live in ``gm.target_transform.graph`` and ``gm.core.graph``; the top-level graph
# only calls the two.
HOISTED = "optimize_loss.hoisted"
# str on target-only nodes that stay in the core graph: why they were not hoisted.
NOT_HOISTED_BECAUSE = "optimize_loss.not_hoisted_because"
# str on the node calling a re-rolled loop (reroll_unrolled_loops): what it replaced.
REROLLED = "optimize_loss.rerolled"
# str on the node that combines a candidate loop's copies (an add chain's last link, a stack or
# cat) that reroll_unrolled_loops left alone: why. Also in ``gm.meta`` of a graph in which that
# pass found no candidate loop at all.
NOT_REROLLED_BECAUSE = "optimize_loss.not_rerolled_because"

"""The loop vectorizer: ``vectorize_loops`` (the AST pass) runs ``vectorize_loops.LOOP_STAGES``,
one module per stage, on each loop's ``plan.LoopPlan``; ``loop_dataflow`` is the analysis the
stages share."""

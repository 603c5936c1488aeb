"""The loop vectorizer: ``vectorize_loops`` (the AST pass) runs ``vectorize_loops.LOOP_STAGES``,
one module per stage, on each loop's ``plan.LoopPlan``. Not stages themselves: ``loop_dataflow``,
the analysis the stages share, and ``batch_calls``/``batch_scope``/``batch_set_forms``/
``batch_values``, the parts of the ``batch_loop_bodies`` stage."""

"""The real-code corpus: loss functions as public repositories write them, paraphrased (never
copied), one module per loss, with the contract of ``examples/`` (``CASE``, ``naive``, ``expert``,
``make_inputs``) plus ``CASE["source"]`` ("owner/repo:path/of/file.py", the code it paraphrases)
and ``CASE["field"]`` (one of ``FIELDS``)."""

FIELDS = ("segmentation", "detection", "metric learning", "contrastive learning",
          "speaker/face verification", "nlp sequence", "rl returns", "point clouds",
          "distillation", "depth/regression", "pose", "re-identification", "speech separation")

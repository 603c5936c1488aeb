"""The tools around the core: the ``optimize-loss`` CLI (``cli``), its ``inspect``, ``verify`` and
``lint`` commands (``inspection``, with ``inputs`` and ``html_report``) and LossBench (``bench``,
``bench_report``, ``bench_worker``). They import the core (``rewrite``); the core never imports them."""

"""The loop vectorizer: ``vectorize_loops`` (the AST pass) and the stages it runs on each loop."""

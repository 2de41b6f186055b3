"""`kron eval`: evaluation of a workspace's models, one module per evaluation.

- glue_eval.py: loading a workspace's task models (WS/tasks/<task>/student|teacher), batched prediction,
  metric rows for WS/metrics/eval.csv, and `kron eval glue` (dev scores, test predictions);
- predictions.py: GLUE-server submission files (WS/predictions/<TASK>.tsv);
- ood.py: `kron eval ood`, a task model on another labelled file and its robustness gap.
"""

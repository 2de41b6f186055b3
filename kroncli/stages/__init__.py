"""Stage orchestration: what `kron distill` / `kron finetune` do between the workspace and the loop."""

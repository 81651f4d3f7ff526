"""The training runtime: the loop (engine.py) and what it stands on.

optim.py: parameter groups and the learning-rate schedule; ema.py: weight averaging;
checkpoint.py: atomic best / resumable checkpoints; replay.py: a read-out over another run's validated weights; distributed.py: Accelerate and DeepSpeed set-up;
tracking.py: progress bars, TensorBoard/JSONL logs. The engine asks the method (adpm_dist.methods)
what to compute; it never tests a method's name.
"""

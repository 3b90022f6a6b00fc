"""Training: the chunk worker (one process per chunk), the PPO subclass, device rollouts, GPU memory."""

"""Simulation: the batched Genesis Go2 environment, its reward terms and the SB3 VecEnv adapter."""

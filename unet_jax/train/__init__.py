"""One run and one group of runs, from set-up to write-out (unet_jax.train.trainer first)."""

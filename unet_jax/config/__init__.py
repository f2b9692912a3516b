"""What a config can say, with no JAX and no TFDS (what configs/*.py import):

  defaults      every field of a run with its default, and the config arguments
  target_sets   the target sets a study fine-tunes on, and how one applies to a run
  checks        the checks of the plain fields and of the study's declared inference
  families      the family table: the study's families of configurations
  auto_spec     the grammar of `auto:` freeze specs and the fields they read
  registration  a study's pre-registration record (what it declares, when, amendments)

It imports only the standard library, ml_collections, unet_jax.errors, unet_jax.io_utils,
unet_jax.layout and the data catalogue (unet_jax.data.fields, unet_jax.data.modalities,
unet_jax.data.duplicates' thresholds); tests/test_imports.py holds it to that.
"""

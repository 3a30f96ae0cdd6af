"""jaxflows: normalizing flows in JAX/Flax."""

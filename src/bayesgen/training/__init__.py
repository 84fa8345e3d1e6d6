"""The one training engine: configuration to objects, the Lightning task, callbacks, checkpoints."""

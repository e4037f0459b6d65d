"""Training: losses (:mod:`.loss`) and the training loop (:mod:`.loop`)."""

"""The ``qhflow`` command line: ``qhflow scf|label|train|bench``."""

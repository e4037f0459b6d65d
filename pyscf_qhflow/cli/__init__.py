"""The ``qhflow`` command line: ``qhflow scf|oneshot|label|train|bench``."""

"""2.5D crops around labelled or predicted points, study-level folds, and the on-disk crop cache.

`extract` cuts crops (shared by training and inference), `folds` assigns studies to cross-validation
folds, `cache` reads a finished cache, `prepare` builds one from an RSNA-layout data folder.
"""

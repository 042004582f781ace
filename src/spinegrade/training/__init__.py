"""Training of the severity classifier on a crop cache (Lightning).

Modules: `imbalance` (class weights, oversampling, SMOTE), `augment` (batch augmentation in torch),
`datamodule` (memory-mapped crops, batch-at-a-time loading), `module` (LightningModules, validation
scoring, metrics.csv), `checkpoint` (best.safetensors/best.json, `load_run`), `runs` (TrainConfig, run
files), `train` (one fold, every fold, comparisons), `commands` (`spinegrade train`). Nothing is imported
here so that `import spinegrade.training` stays light; import the module you need.
"""

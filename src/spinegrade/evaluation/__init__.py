"""Evaluation: the challenge score, per-class metrics, level priors, submission reading and the report.

Modules: `score` (challenge_score, score_submission), `metrics` (classification_metrics), `priors`
(level_priors), `submission` (read/validate submission CSVs), `report` (report.json, report.md, figures),
`commands` (`spinegrade evaluate`). Nothing is imported here so that `import spinegrade.evaluation` stays
light; import the module you need.
"""

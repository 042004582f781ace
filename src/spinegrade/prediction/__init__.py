"""The last stage: grade whole studies end to end (read, locate, crop, classify) into a submission CSV.

`studies` finds the test studies and reads one at a time, `grade` classifies crops with one or many runs,
`predict` orchestrates (priors for what cannot be graded, per-study JSON), `overlay` draws the located
points with their grades, `commands` holds the `spinegrade predict` command.
"""

"""The last stage: grade whole studies end to end (read, locate, crop, classify) into a submission CSV.

`studies` finds the test studies and reads one, `readahead` reads them in order (in worker processes when
asked), `grade` holds the classifier ensemble and cuts crops, `grading` grades one read study, `priors`
gives the probabilities of what cannot be graded, `results` the per-study result and the run's summary,
`submission` the rows in the sample submission's order, `predict` the run loop (resume, per-study JSON),
`overlay` draws the located points with their grades, `commands` holds the `spinegrade predict` command.
"""

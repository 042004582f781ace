"""Stage 1: find the 25 target points of a study (heatmap locators per series type; `locate_study`)."""

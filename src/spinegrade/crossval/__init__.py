"""`spinegrade cv`: the cross-validated score of the whole pipeline (locate -> crop -> grade) per fold."""

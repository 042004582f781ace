"""Reading the RSNA 2024 dataset: CSV tables, DICOM series, the synthetic phantom and `inspect`."""

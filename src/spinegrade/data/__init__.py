"""Reading the RSNA 2024 dataset: CSV tables, DICOM series and `inspect`."""

"""Model bundles: every weight, setting and hash inference needs, in one folder (`spinegrade export`).

`manifest` writes and checks manifest.json, `export` builds a bundle from run and locator folders (with
the ONNX graphs of spinegrade.onnxrt).
"""

"""Model bundles: every weight, setting and hash inference needs, in one folder (`spinegrade export`).

`manifest` writes and checks manifest.json, `export` builds a bundle from run and locator folders, `onnx`
exports the networks to ONNX and runs them with ONNX Runtime (`predict --runtime onnx`).
"""

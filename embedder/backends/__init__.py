"""The runtimes a model may run on, behind the session interface the engine uses (`run`,
`get_inputs`, `get_outputs`): ONNX Runtime (`embedder.sessions`, the engine of record) and
OpenVINO (`openvino`, optional); which one serves each model (`runtimes`, measured by
`choice` at load and kept by `cache`)."""

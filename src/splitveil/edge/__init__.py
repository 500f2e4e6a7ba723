"""The edge half on a device without torch: an exported ``edge.onnx`` run by ONNX Runtime.

Only numpy and onnxruntime are imported here (and the wire codec, which is numpy too), so a phone
or a board runs the deployed edge, defense included, without a 1 GB framework:

    >>> from splitveil.edge import OnnxEdge             # doctest: +SKIP
    >>> edge = OnnxEdge("bundle/edge.onnx")              # doctest: +SKIP
    >>> features, salts = edge.features(images)          # doctest: +SKIP
    >>> logits = edge.decode(cloud_answer, salts)        # doctest: +SKIP
"""

from splitveil.edge.runtime import OnnxEdge, read_onnx_metadata, secure_session

__all__ = ["OnnxEdge", "read_onnx_metadata", "secure_session"]

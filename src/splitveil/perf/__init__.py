"""Performance benchmarks: what a deployment costs in time, apart from the sweep engine (:mod:`splitveil.bench`).

- :mod:`~splitveil.perf.serving`: a real server under concurrent clients (latency, throughput);
- :mod:`~splitveil.perf.codecs`: wire codecs' size, speed and fidelity;
- :mod:`~splitveil.perf.edge_runtimes`: torch vs ONNX float32 vs ONNX int8 edge (latency, memory, size,
  accuracy), each measured in its own process by :mod:`~splitveil.perf.edge_probe`;
- :mod:`~splitveil.perf.timing`: the cost of each attack and defense per cell;
- :mod:`~splitveil.perf.scaling`: sweep wall time against workers and threads.
"""

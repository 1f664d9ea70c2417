"""The ranker's ONNX graph, built from plain numpy weights.

Architecture (the service's model contract, see app.feature_spec)::

    q = mean of E[query_ids]   (id 0 = padding, excluded from the mean)   [1, d]
    t = mean of E[title_ids]                                               [N, d]
    n = normalise(dense)       (training.normalise: signed log1p on some
                                columns, then (x - mu) * scale)            [N, D]
    x = concat(n, q (broadcast), t, q * t)                                 [N, D + 3d]
    score = W3 . relu(W2 . relu(W1 . x + b1) + b2) + b3                    [N]

A model without tokens (``embedding`` None, e.g. trained on a LETOR file) has only the
``dense`` input and x = n. Both the hand-set baseline and the trained models are
written through :func:`build_onnx`, and :func:`forward` is the numpy reference used by
parity tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.feature_spec import (
    INPUT_DENSE,
    INPUT_QUERY_IDS,
    INPUT_TITLE_IDS,
    OUTPUT_SCORE,
)
from training.normalise import Normaliser

OPSET = 17


@dataclass
class RankerWeights:
    norm: Normaliser  # of the D dense inputs
    embedding: np.ndarray | None  # [buckets, d], row 0 = padding (zeros); None: no tokens
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out]); last out = 1

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mu": self.norm.mu, "scale": self.norm.scale}
        if self.embedding is not None:
            out["embedding"] = self.embedding
        for i, (w, b) in enumerate(self.layers):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _mean_embedding(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    mask = (ids > 0).astype(np.float32)
    summed = (table[ids] * mask[..., None]).sum(axis=1)
    return summed / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)


def forward(w: RankerWeights, dense: np.ndarray, query_ids: np.ndarray | None = None,
            title_ids: np.ndarray | None = None) -> np.ndarray:
    """Numpy reference of the graph (float64 internally)."""
    a = {k: v.astype(np.float64) for k, v in w.arrays().items()}
    norm = Normaliser(w.norm.log, a["mu"], a["scale"])
    x = norm.apply(dense)
    if w.embedding is not None:
        assert query_ids is not None and title_ids is not None, "this model reads tokens"
        q = _mean_embedding(query_ids, a["embedding"])
        t = _mean_embedding(title_ids, a["embedding"])
        x = np.concatenate([x, np.broadcast_to(q, t.shape), t, q * t], axis=1)
    for i in range(len(w.layers)):
        x = x @ a[f"w{i}"] + a[f"b{i}"]
        if i < len(w.layers) - 1:
            x = np.maximum(x, 0.0)
    return x[:, 0]


def _mean_embedding_nodes(prefix: str, ids: str) -> list:
    h = helper.make_node
    return [
        h("Gather", ["embedding", ids], [f"{prefix}_emb"], axis=0),
        h("ReduceSum", [f"{prefix}_emb", "axis1"], [f"{prefix}_sum"], keepdims=0),
        h("Greater", [ids, "zero_i64"], [f"{prefix}_maskb"]),
        h("Cast", [f"{prefix}_maskb"], [f"{prefix}_mask"], to=TensorProto.FLOAT),
        h("ReduceSum", [f"{prefix}_mask", "axis1"], [f"{prefix}_cnt"], keepdims=1),
        h("Max", [f"{prefix}_cnt", "one_f"], [f"{prefix}_den"]),
        h("Div", [f"{prefix}_sum", f"{prefix}_den"], [f"{prefix}_mean"]),
    ]


def _normalise_nodes(norm: Normaliser) -> tuple[list, list]:
    """Nodes from the dense input to ``dense_n``, and the initializer they add."""
    h = helper.make_node
    nodes, init, shaped = [], [], INPUT_DENSE
    if norm.log.any():  # sign(x) * log(1 + |x|) on the log columns
        init.append(numpy_helper.from_array(np.asarray(norm.log, bool), "log_columns"))
        nodes += [h("Abs", [INPUT_DENSE], ["dense_abs"]),
                  h("Add", ["dense_abs", "one_f"], ["dense_abs1"]),
                  h("Log", ["dense_abs1"], ["dense_log"]),
                  h("Sign", [INPUT_DENSE], ["dense_sign"]),
                  h("Mul", ["dense_sign", "dense_log"], ["dense_slog"]),
                  h("Where", ["log_columns", "dense_slog", INPUT_DENSE], ["dense_s"])]
        shaped = "dense_s"
    nodes += [h("Sub", [shaped, "mu"], ["dense_c"]), h("Mul", ["dense_c", "scale"], ["dense_n"])]
    return nodes, init


def build_onnx(w: RankerWeights, producer: str = "bestmatch") -> onnx.ModelProto:
    h = helper.make_node
    arrays = w.arrays()
    init = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    init.append(numpy_helper.from_array(np.array(1.0, np.float32), "one_f"))
    nodes, norm_init = _normalise_nodes(w.norm)
    init += norm_init
    inputs = [helper.make_tensor_value_info(INPUT_DENSE, TensorProto.FLOAT,
                                            ["N", len(w.norm.mu)])]
    if w.embedding is None:
        nodes.append(h("Identity", ["dense_n"], ["x0"]))
    else:
        init += [
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array(0, np.int64), "zero_i64"),
        ]
        nodes += _mean_embedding_nodes("q", INPUT_QUERY_IDS)
        nodes += _mean_embedding_nodes("t", INPUT_TITLE_IDS)
        nodes += [
            h("Shape", ["t_mean"], ["t_shape"]),
            h("Expand", ["q_mean", "t_shape"], ["q_rows"]),
            h("Mul", ["q_rows", "t_mean"], ["qt"]),
            h("Concat", ["dense_n", "q_rows", "t_mean", "qt"], ["x0"], axis=1),
        ]
        inputs += [
            helper.make_tensor_value_info(INPUT_QUERY_IDS, TensorProto.INT64, [1, "Lq"]),
            helper.make_tensor_value_info(INPUT_TITLE_IDS, TensorProto.INT64, ["N", "Lt"]),
        ]
    init.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
    last = len(w.layers) - 1
    for i in range(len(w.layers)):
        nodes.append(h("Gemm", [f"x{i}", f"w{i}", f"b{i}"], [f"z{i}"]))
        nodes.append(h("Relu", [f"z{i}"], [f"x{i + 1}"]) if i < last else
                     h("Reshape", [f"z{i}", "flat"], [OUTPUT_SCORE]))
    graph = helper.make_graph(
        nodes, "bestmatch_ranker", inputs=inputs,
        outputs=[helper.make_tensor_value_info(OUTPUT_SCORE, TensorProto.FLOAT, ["N"])],
        initializer=init,
    )
    model = helper.make_model(
        graph, producer_name=producer, opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model

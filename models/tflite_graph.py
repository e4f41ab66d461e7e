"""Run a TFLite graph as a PyTorch module (mediapipe's face detector and face mesh on the GPU).

    from models.tflite_graph import TfliteGraph
    net = TfliteGraph.from_file("face_landmark.tflite").to("cuda").half()
    landmarks, face_flag = net(x)          # x: (N, 3, 192, 192), channels first; outputs in TFLite layout

mediapipe runs its models on the CPU (TFLite/XNNPACK). To run the same models in the GPU pipeline, and
to export them to ONNX and TensorRT like our own networks, this module reads the .tflite flatbuffer
(with the `tflite` schema package) and rebuilds the graph from torch operations, op by op, with the
file's own weights: no retraining, no hand-written architecture. Only the operators mediapipe's face
models use are supported; anything else raises `UnsupportedGraph` naming the operator.

Activations run channels first (NCHW, what cuDNN and TensorRT prefer); the graph's 4-D NHWC tensors
are converted at the edges. Constant sub-graphs (DENSIFY of sparse weights, DEQUANTIZE of fp16
weights) are folded at load time. The batch dimension is free (the files say 1).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TfliteGraph", "UnsupportedGraph", "densify"]


class UnsupportedGraph(ValueError):
    pass


_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _schema():
    try:
        import tflite
    except ImportError as e:
        raise UnsupportedGraph("reading .tflite files needs the 'tflite' package: pip install tflite") from e
    return tflite


def _options(tflite, op, cls):
    table = op.BuiltinOptions()
    opts = getattr(tflite, cls)()
    if table is not None:
        opts.Init(table.Bytes, table.Pos)
    return opts


def _index_vector(tflite, kind: int, table) -> np.ndarray:
    """A sparse dimension's segments / indices: a union of int32, uint16 and uint8 vectors."""
    cls = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}[kind]
    vec = getattr(tflite, cls)()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape, traversal_order, block_map, levels) -> np.ndarray:
    """The dense tensor of a TFLite sparse constant.

    `levels[i]` describes traversal level i: ("dense", size) or ("csr", segments, indices). Level i
    walks dimension `traversal_order[i]` of the blocked shape: the original dimensions (blocked
    ones counted in blocks) followed by one dimension per entry of `block_map`, the position inside
    a block of original dimension `block_map[b]`.
    """
    n = len(shape)
    positions = np.zeros(1, np.int64)                 # where each partial path points in the next level
    coords = np.zeros((1, 0), np.int64)
    for level in levels:
        if level[0] == "dense":
            size = level[1]
            positions = (positions[:, None] * size + np.arange(size)).ravel()
            coords = np.concatenate([np.repeat(coords, size, 0), np.tile(np.arange(size), len(coords))[:, None]], 1)
        else:
            segments, indices = level[1], level[2]
            counts = segments[positions + 1] - segments[positions]
            starts = np.repeat(segments[positions], counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            positions = starts + offsets
            coords = np.concatenate([np.repeat(coords, counts, 0), indices[positions][:, None]], 1)
    expanded = np.zeros((len(positions), len(traversal_order)), np.int64)
    expanded[:, list(traversal_order)] = coords
    block_sizes = {}
    for level_i, dim in enumerate(traversal_order):
        if dim >= n:
            block_sizes[block_map[dim - n]] = (dim, levels[level_i][1])
    original = expanded[:, :n].copy()
    for dim, (block_dim, size) in block_sizes.items():
        original[:, dim] = original[:, dim] * size + expanded[:, block_dim]
    dense = np.zeros(tuple(shape), values.dtype)
    dense[tuple(original.T)] = values[:len(positions)]
    return dense


def _activation(kind: int):
    if kind == 0:
        return None
    if kind == 1:
        return F.relu
    if kind == 3:
        return lambda x: x.clamp(0, 6)
    if kind == 4:
        return torch.tanh
    raise UnsupportedGraph(f"fused activation {kind} is not supported")


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (the extra pixel, if any, goes after)."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class TfliteGraph(nn.Module):
    """A TFLite graph's float subgraph 0 as torch operations (weights as buffers: `.to()`/`.half()` work)."""

    def __init__(self, steps, constants: dict[int, np.ndarray], inputs, outputs, shapes, output_names):
        super().__init__()
        self._steps = steps
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._shapes = shapes
        self.output_names = list(output_names)
        self._const_names = {}
        for tid, value in constants.items():
            name = f"t{tid}"
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)), persistent=False)
            self._const_names[tid] = name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The file's input shape, NHWC (batch 1)."""
        return tuple(int(v) for v in self._shapes[self._inputs[0]])

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> "TfliteGraph":
        tflite = _schema()
        path = Path(path)
        try:
            buf = path.read_bytes()
        except OSError as e:
            raise UnsupportedGraph(f"cannot read {path}: {e.strerror or e}") from None
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        shapes, values = {}, {}
        for tid in range(graph.TensorsLength()):
            t = graph.Tensors(tid)
            shapes[tid] = t.ShapeAsNumpy().tolist() if t.ShapeLength() else []
            data = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
            if isinstance(data, np.ndarray) and data.size:
                if t.Type() not in _NUMPY_TYPES:
                    raise UnsupportedGraph(f"{path.name}: tensor type {t.Type()} is not supported")
                raw = data.view(_NUMPY_TYPES[t.Type()])
                if t.Sparsity() is not None:
                    values[tid] = ("sparse", raw, t.Sparsity())
                else:
                    values[tid] = raw.reshape(shapes[tid]) if shapes[tid] else raw.reshape(())
        steps = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(v) for v in op.OutputsAsNumpy()]
            if name == "DENSIFY":
                kind, raw, sp = values[ins[0]]
                levels = []
                for k in range(sp.DimMetadataLength()):
                    dm = sp.DimMetadata(k)
                    if dm.Format() == 0:
                        levels.append(("dense", int(dm.DenseSize())))
                    else:
                        levels.append(("csr", _index_vector(tflite, dm.ArraySegmentsType(), dm.ArraySegments()),
                                       _index_vector(tflite, dm.ArrayIndicesType(), dm.ArrayIndices())))
                block_map = sp.BlockMapAsNumpy().tolist() if sp.BlockMapLength() else []
                values[outs[0]] = densify(raw, shapes[outs[0]], sp.TraversalOrderAsNumpy().tolist(), block_map,
                                          levels)
                continue
            if name == "DEQUANTIZE" and isinstance(values.get(ins[0]), np.ndarray):
                values[outs[0]] = values[ins[0]].astype(np.float32)
                continue
            steps.append(cls._step(tflite, name, op, ins, outs, shapes, values, path.name))
        used = {tid for s in steps for tid in s["consts"]}
        constants = {}
        for tid in used:
            value = values[tid]
            if isinstance(value, tuple):
                raise UnsupportedGraph(f"{path.name}: sparse tensor {tid} is used without DENSIFY")
            constants[tid] = cls._torch_constant(value, steps, tid)
        inputs = graph.InputsAsNumpy().tolist()
        outputs = graph.OutputsAsNumpy().tolist()
        output_names = [graph.Tensors(t).Name().decode() for t in outputs]
        return cls(steps, constants, inputs, outputs, shapes, output_names)

    @staticmethod
    def _torch_constant(value: np.ndarray, steps, tid):
        """Weights in torch's layout for the op that reads them."""
        for s in steps:
            if tid not in s["consts"]:
                continue
            role = s["consts"][tid]
            v = value.astype(np.float32) if value.dtype == np.float16 else value
            if role == "conv_weight":                 # OHWI -> OIHW
                return v.transpose(0, 3, 1, 2)
            if role == "depthwise_weight":            # 1HW(C*M) -> (C*M)1HW
                return v.transpose(3, 0, 1, 2)
            if role == "channel_vector":              # (..., C) broadcast against NCHW
                if v.size > 1 and v.size != v.shape[-1]:
                    raise UnsupportedGraph(f"constant {tid} of shape {v.shape}: only per-channel or scalar "
                                           "constants are supported in 4-D ADD / MUL / PRELU")
                return v.reshape(-1)[None, :, None, None] if v.size > 1 else v.reshape(())
            return v
        return value

    @staticmethod
    def _step(tflite, name, op, ins, outs, shapes, values, filename):
        step = {"op": name, "ins": ins, "outs": outs, "consts": {}}
        const = lambda k: ins[k] in values                  # noqa: E731
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            opts = _options(tflite, op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
            kh, kw = shapes[ins[1]][1:3]
            sh, sw = opts.StrideH(), opts.StrideW()
            dh, dw = opts.DilationHFactor(), opts.DilationWFactor()
            h, w = shapes[ins[0]][1:3]
            pad = (0, 0, 0, 0)
            if opts.Padding() == 0:                            # SAME
                pad = (*_same_padding(w, kw, sw, dw), *_same_padding(h, kh, sh, dh))
            step.update(stride=(sh, sw), dilation=(dh, dw), pad=pad, act=opts.FusedActivationFunction(),
                        groups=shapes[ins[0]][3] if depthwise else 1)
            step["consts"][ins[1]] = "depthwise_weight" if depthwise else "conv_weight"
            if len(ins) > 2 and ins[2] >= 0:
                step["consts"][ins[2]] = "bias"
        elif name == "MAX_POOL_2D":
            opts = _options(tflite, op, "Pool2DOptions")
            k, s = (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW())
            h, w = shapes[ins[0]][1:3]
            pad = (0, 0, 0, 0)
            if opts.Padding() == 0:
                pad = (*_same_padding(w, k[1], s[1]), *_same_padding(h, k[0], s[0]))
            step.update(kernel=k, stride=s, pad=pad, act=opts.FusedActivationFunction())
        elif name in ("ADD", "MUL"):
            opts = _options(tflite, op, "AddOptions" if name == "ADD" else "MulOptions")
            step["act"] = opts.FusedActivationFunction()
            for k in (0, 1):
                if const(k):
                    step["consts"][ins[k]] = "channel_vector" if len(shapes[outs[0]]) == 4 else "value"
        elif name == "PRELU":
            step["consts"][ins[1]] = "channel_vector"
        elif name == "PAD":
            paddings = np.asarray(values[ins[1]]).reshape(-1, 2)
            if len(paddings) != 4 or paddings[0].any():
                raise UnsupportedGraph(f"{filename}: PAD over batch or non-4-D tensors is not supported")
            (t, b), (l, r), (c0, c1) = paddings[1], paddings[2], paddings[3]
            step["pad"] = (int(l), int(r), int(t), int(b), int(c0), int(c1))
        elif name == "RESHAPE":
            step["shape"] = shapes[outs[0]]
        elif name == "CONCATENATION":
            opts = _options(tflite, op, "ConcatenationOptions")
            rank = len(shapes[outs[0]])
            axis = opts.Axis() % rank
            step.update(axis=_NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis, act=opts.FusedActivationFunction())
        elif name == "RESIZE_BILINEAR":
            opts = _options(tflite, op, "ResizeBilinearOptions")
            if opts.AlignCorners() == opts.HalfPixelCenters():
                raise UnsupportedGraph(f"{filename}: RESIZE_BILINEAR needs exactly one of align_corners, "
                                       "half_pixel_centers")
            step.update(size=tuple(int(v) for v in values[ins[1]]), align_corners=bool(opts.AlignCorners()))
        elif name == "DEPTH_TO_SPACE":
            step["block"] = _options(tflite, op, "DepthToSpaceOptions").BlockSize()
        elif name in ("RELU", "RELU6", "LOGISTIC"):
            pass
        else:
            raise UnsupportedGraph(f"{filename}: operator {name} is not supported")
        return step

    # -- running ---------------------------------------------------------------------------------
    def _value(self, env, tid):
        return env[tid] if tid in env else getattr(self, self._const_names[tid])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`x`: (N, C, H, W) in the graph's input range. Returns the outputs in TFLite (NHWC) layout."""
        env = {self._inputs[0]: x}
        for s in self._steps:
            op = s["op"]
            a = self._value(env, s["ins"][0])
            if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                weight = self._value(env, s["ins"][1]).to(a.dtype)
                bias = self._value(env, s["ins"][2]).to(a.dtype) if s["ins"][2:] and s["ins"][2] >= 0 else None
                if any(s["pad"]):
                    a = F.pad(a, s["pad"])
                y = F.conv2d(a, weight, bias, s["stride"], 0, s["dilation"], s["groups"])
            elif op == "MAX_POOL_2D":
                if any(s["pad"]):
                    a = F.pad(a, s["pad"], value=float("-inf"))
                y = F.max_pool2d(a, s["kernel"], s["stride"])
            elif op == "ADD":
                y = a + self._value(env, s["ins"][1]).to(a.dtype)
            elif op == "MUL":
                y = a * self._value(env, s["ins"][1]).to(a.dtype)
            elif op == "PRELU":
                alpha = self._value(env, s["ins"][1]).to(a.dtype)
                y = torch.where(a >= 0, a, a * alpha)
            elif op == "PAD":
                y = F.pad(a, s["pad"])
            elif op == "RELU":
                y = F.relu(a)
            elif op == "RELU6":
                y = a.clamp(0, 6)
            elif op == "LOGISTIC":
                y = torch.sigmoid(a)
            elif op == "RESHAPE":
                if a.ndim == 4:
                    a = a.permute(0, 2, 3, 1)                 # back to NHWC: the reshape is defined there
                y = a.reshape(-1, *s["shape"][1:])
                if y.ndim == 4:
                    y = y.permute(0, 3, 1, 2)
            elif op == "CONCATENATION":
                y = torch.cat([self._value(env, t).to(a.dtype) for t in s["ins"]], s["axis"])
            elif op == "RESIZE_BILINEAR":
                y = F.interpolate(a, size=s["size"], mode="bilinear", align_corners=s["align_corners"])
            elif op == "DEPTH_TO_SPACE":
                # TensorFlow's DCR order: output channel c of block (i, j) is input channel (i*b + j)*C + c
                b = s["block"]
                n, c, h, w = a.shape
                y = a.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)
            else:                                             # checked at load time
                raise UnsupportedGraph(op)
            act = _activation(s.get("act", 0))
            env[s["outs"][0]] = act(y) if act is not None else y
        outs = []
        for tid in self._outputs:
            y = env[tid]
            outs.append(y.permute(0, 2, 3, 1) if y.ndim == 4 else y)
        return tuple(outs)

"""Which ops of a TFLite file compute with sparse weights: read from the flatbuffer, without running it.

`tf.lite.Optimize.EXPERIMENTAL_SPARSITY` stores a kernel with enough zeros in TFLite's sparse format. Whether the op
then runs a sparse kernel depends on how it was stored: TFLite's FULLY_CONNECTED kernel computes with weights
stored in blocks of its [out, in] matrix (1×4 for float, 1×16 for int8: a Keras `block_shape` of (4, 1) or
(16, 1)), while weights the converter could only store unblocked get a DENSIFY op in front, which makes them dense
once, when the interpreter prepares the model: those ops compute dense, the file is only smaller.
"""
import dataclasses
from typing import List, Optional, Sequence, Tuple

from tensorflow.lite.python import schema_py_generated as schema

# Ops with a constant weight tensor, and that tensor's input index.
WEIGHT_INPUT = {'FULLY_CONNECTED': 1, 'CONV_2D': 1, 'DEPTHWISE_CONV_2D': 1, 'TRANSPOSE_CONV': 1, 'CONV_3D': 1}
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith('_')}
_TYPE_NAMES = {code: name.lower() for name, code in vars(schema.TensorType).items() if not name.startswith('_')}
_PASS_THROUGH = ('DENSIFY', 'DEQUANTIZE')  # ops between a stored weight and the op that uses it


@dataclasses.dataclass(frozen=True)
class WeightOp:
  """One op with a constant weight tensor, and how that weight is stored."""
  op: str                         # builtin op name, e.g. 'FULLY_CONNECTED'
  name: str                       # the Keras layer (from the op's tensor names), or the signature output it feeds
  weight_shape: Tuple[int, ...]   # TFLite layout: [out, in] for FULLY_CONNECTED, [out, h, w, in] for CONV_2D
  weight_type: str                # of the stored weight: 'float32', 'int8', ...
  storage: str                    # 'block-sparse', 'sparse' (no blocks) or 'dense'
  block: Optional[Tuple[int, ...]] = None  # block-sparse: the block, in weight_shape's layout (e.g. (1, 4))
  densified: bool = False         # a DENSIFY op makes the weight dense before the op runs
  stored_fraction: float = 1.0    # stored values / weight size (sparse storage keeps the non-zero blocks only)

  @property
  def runs_sparse(self) -> bool:
    """The op's own kernel reads the sparse format (no DENSIFY in front of it)."""
    return self.storage != 'dense' and not self.densified

  @property
  def keras_block(self) -> Optional[Tuple[int, int]]:
    """The block as a Keras kernel's (b_in, b_out), for weights [out, ..., in] whose spatial block dims are 1."""
    if self.block is None or self.op == 'DEPTHWISE_CONV_2D' or any(b != 1 for b in self.block[1:-1]):
      return None
    return self.block[-1], self.block[0]

  def block_text(self) -> str:
    """'1×4 blocks of [out, in] = Keras block_shape (4, 1)', or '' without blocks."""
    if self.block is None:
      return ''
    text = '×'.join(str(b) for b in self.block) + ' blocks'
    if self.keras_block is not None:
      text += f' = Keras block_shape {self.keras_block}'
    return text


def _op_name(model, op) -> str:
  code = model.operatorCodes[op.opcodeIndex]
  number = max(code.builtinCode, code.deprecatedBuiltinCode)
  return _OP_NAMES.get(number, f'op{number}') if number != schema.BuiltinOperator.CUSTOM else (
      (code.customCode or b'CUSTOM').decode())


def _decode(name) -> str:
  return name.decode() if isinstance(name, bytes) else str(name or '')


def layer_name(tensor_name: str) -> Optional[str]:
  """The Keras layer a TFLite tensor name comes from: 'model/fc1/MatMul;model/fc1/Relu' → 'fc1'.

  The first scope (the outer model) and the last (the TF op) are dropped; nested models keep their scope
  ('model/backbone/conv1/Conv2D' → 'backbone/conv1'). None for names without a scope ('StatefulPartitionedCall:0').
  """
  for part in tensor_name.split(';'):
    scopes = [s for s in part.split(':')[0].split('/') if s]
    if len(scopes) >= 2:
      scopes = scopes[:-1]
      return '/'.join(scopes[1:] if len(scopes) > 1 else scopes)
  return None


def _signature_outputs(model) -> dict:
  """{tensor index: signature output name} over the file's signatures."""
  return {m.tensorIndex: _decode(m.name) for sig in (model.signatureDefs or []) for m in (sig.outputs or [])}


def _block(sparsity) -> Optional[Tuple[int, ...]]:
  block_map = list(sparsity.blockMap if sparsity.blockMap is not None else [])
  if not block_map:
    return None
  rank = len(sparsity.traversalOrder) - len(block_map)
  block = [1] * rank
  for k, dim in enumerate(block_map):
    block[int(dim)] = int(sparsity.dimMetadata[rank + k].denseSize)
  return tuple(block)


def weight_ops(model_content: bytes) -> List[WeightOp]:
  """The ops of the file's main subgraph with a constant weight tensor (WEIGHT_INPUT), in execution order."""
  model = schema.ModelT.InitFromPackedBuf(model_content, 0)
  graph = model.subgraphs[0]
  producer = {out: op for op in graph.operators for out in (op.outputs if op.outputs is not None else [])}
  outputs = _signature_outputs(model)
  records = []
  for op in graph.operators:
    op_type = _op_name(model, op)
    index = WEIGHT_INPUT.get(op_type)
    if index is None or op.inputs is None or len(op.inputs) <= index or op.inputs[index] < 0:
      continue
    stored, densified = int(op.inputs[index]), False
    while stored in producer and _op_name(model, producer[stored]) in _PASS_THROUGH:
      densified |= _op_name(model, producer[stored]) == 'DENSIFY'
      stored = int(producer[stored].inputs[0])
    tensor = graph.tensors[stored]
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if stored in producer or data is None or not len(data):
      continue  # computed at runtime: not a weight
    shape = tuple(int(d) for d in tensor.shape)
    size = 1
    for d in shape:
      size *= d
    itemsize = {'float32': 4, 'float16': 2, 'int8': 1, 'uint8': 1, 'int32': 4}.get(_TYPE_NAMES.get(tensor.type), 0)
    block = _block(tensor.sparsity) if tensor.sparsity is not None else None
    storage = 'dense' if tensor.sparsity is None else ('block-sparse' if block else 'sparse')
    names = [_decode(graph.tensors[i].name) for i in list(op.outputs) + [stored] + list(op.inputs[index + 1:])
             if i >= 0]
    name = next((n for n in map(layer_name, names) if n), None)
    name = name or outputs.get(int(op.outputs[0])) or names[0]
    records.append(WeightOp(op=op_type, name=name, weight_shape=shape,
                            weight_type=_TYPE_NAMES.get(tensor.type, str(tensor.type)), storage=storage, block=block,
                            densified=densified,
                            stored_fraction=len(data) / (size * itemsize) if itemsize and size else 1.0))
  return records


def _names(records: Sequence[WeightOp], limit: int) -> str:
  names = [r.name for r in records]
  return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


def describe(records: Sequence[WeightOp], limit: int = 6) -> List[str]:
  """A few lines: which ops run sparse kernels (and on which blocks), which compute dense and why.

  e.g. 'runs sparse: FULLY_CONNECTED fc1, fc2 (float32 weights in 1×4 blocks = Keras block_shape (4, 1))' and
  'computed dense: FULLY_CONNECTED logits (weights stored sparse without blocks, densified at load)'.
  """
  groups = {}
  for r in records:
    if r.runs_sparse:
      key = ('runs sparse', r.op, f'{r.weight_type} weights ' + (f'in {r.block_text()}' if r.block else
                                                                  'stored sparse without blocks'))
    elif r.storage != 'dense':
      what = f'in {r.block_text()}' if r.block else 'sparse without blocks'
      key = ('computed dense', r.op, f'weights stored {what}, densified at load')
    else:
      key = ('computed dense', r.op, 'weights stored dense')
    groups.setdefault(key, []).append(r)
  if not groups:
    return ['no FULLY_CONNECTED or convolution ops with constant weights']
  lines = []
  for (verdict, op, why), members in sorted(groups.items(), key=lambda item: item[0][0] != 'runs sparse'):
    lines.append(f'{verdict}: {op} {_names(members, limit)} ({why})')
  if not any(r.runs_sparse for r in records):
    lines.insert(0, 'runs sparse: none')
  return lines

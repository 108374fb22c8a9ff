"""tf_keras' TFOpLambda: raw TensorFlow ops recorded in a Keras 2 functional model.

For example `x * 3.0`, `tf.nn.relu6(x)`, `a + b`. The element-wise ones behave like the
layers of the same meaning; any other op is an error naming it."""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout
from pruner.core.kinds.common import fixed_output
from pruner.core.kinds.merges import ElementwiseMerge
from pruner.core.kinds.passthrough import PassThrough
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown

UNARY = frozenset({
    "nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.gelu", "nn.silu", "nn.swish",
    "nn.leaky_relu", "nn.softplus", "nn.softsign", "math.sigmoid", "math.tanh",
    "math.softplus", "math.softsign", "math.abs", "math.negative", "math.square",
    "math.log_sigmoid", "identity",
})  # fmt: skip
ELEMENTWISE = frozenset({
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv",
    "math.divide", "math.maximum", "math.minimum",
})  # fmt: skip
_UNARY, _MERGE = PassThrough(), ElementwiseMerge()


class TFOpLambdaKind(LayerKind):
    class_names = ("TFOpLambda",)

    def _op(self, rec: LayerRecord) -> LayerKind | None:
        function = str(rec.config.get("function", ""))
        if function in UNARY:
            return _UNARY
        if function in ELEMENTWISE:
            return _MERGE
        return None

    def check(self, rec: LayerRecord) -> None:
        if self._op(rec) is None and not rec.excluded:
            raise UnsupportedLayer(
                f"layer '{rec.path}' is the TensorFlow op tf.{rec.config.get('function')} "
                "(TFOpLambda), which the pruner does not know how channels flow through; "
                f"exclude it with -el {rec.name} to keep its inputs and outputs whole"
            )

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        op = self._op(rec)
        if op is not None:
            return op.flow(g, rec, call)
        for layout in call.in_layouts:
            g.pin(layout, f"input of excluded layer '{rec.path}'")
        return [fixed_output(g, rec, shape) for shape in call.out_shapes]

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        op = self._op(rec)
        if op is None:
            raise ShapeUnknown(
                f"the output shape of tf.{rec.config.get('function')} is not in a Keras 2 config"
            )
        return op.output_shapes(rec, call)

"""Train a 2-8-1 MLP on XOR with the Python API: forward, backward, optimizer step, and an
evaluation under no_grad. Run: python examples/xor.py"""

import numpy as np

import onlytorch as ot
from onlytorch import nn

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)

g = ot.Graph(seed=0)
x = g.input("x", shape=(None, 2))
y = g.input("y", shape=(None, 1))
model = nn.MLP(g, [2, 8, 1], activation_fn="tanh")
logits = model(x)
loss = g.bce_with_logits(logits, y, name="loss")
accuracy = g.mean(g.equal(g.greater(logits, 0.0), y), name="accuracy")
opt = ot.optim.Adam(g, model.parameters(), lr=0.05)

g.set_value(x, X)
g.set_value(y, Y)
for step in range(300):
    g.forward_node(loss)
    g.backward_nodes(model.parameters(), loss)
    opt.step()
    g.clear_jacobi()
    if step % 100 == 0:
        print(f"step {step:3d}  loss {float(g.get_node_value(loss)):.4f}")

acc = g.no_grad_scope(lambda g: float(g.forward_node(accuracy)))
print(f"final loss {float(g.forward_node(loss)):.4f}  accuracy {acc:.0%}")

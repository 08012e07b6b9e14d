import torch

from lstm_mnist.model import RNNClassifier


def test_output_is_one_logit_per_class():
    model = RNNClassifier(num_units=32, num_layers=2, dropout=0.5)
    assert model(torch.rand(4, 28, 28)).shape == (4, 10)


def test_dropout_after_last_layer_in_training_only():
    # One layer: nn.LSTM's inter-layer dropout does nothing, so zeros must come from ours.
    model = RNNClassifier(num_units=256, num_layers=1, dropout=0.5)
    seen = []
    model.head.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    x = torch.rand(32, 28, 28)

    model.train()
    model(x)
    zero_fraction = (seen[-1] == 0).float().mean().item()
    assert 0.4 < zero_fraction < 0.6

    model.eval()
    out1, out2 = model(x), model(x)
    assert (seen[-1] == 0).float().mean().item() < 0.01
    assert torch.equal(out1, out2)


def test_keras_style_init():
    model = RNNClassifier(num_units=64, num_layers=2, dropout=0.0)
    h = 64
    for layer in range(2):
        bias = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.all(bias[h : 2 * h] == 1.0)  # forget gate
        assert torch.all(bias[:h] == 0) and torch.all(bias[2 * h :] == 0)
        w_hh = getattr(model.rnn, f"weight_hh_l{layer}")  # (4h, h): orthonormal columns
        assert torch.allclose(w_hh.T @ w_hh, torch.eye(h), atol=1e-4)


def test_forward_backward_under_cpu_bf16_autocast():
    # On CPUs without native bf16 (AVX2 only) oneDNN's bf16 LSTM does not exist and nn.LSTM
    # under autocast used to crash; the model then runs its LSTM in fp32. Either way: finite loss
    # and gradients, in training mode with dropout, and in eval mode.
    torch.manual_seed(0)
    model = RNNClassifier(num_units=32, num_layers=2, dropout=0.5)
    x, y = torch.rand(8, 28, 28), torch.randint(0, 10, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    assert logits.dtype == torch.bfloat16  # the head still ran under autocast
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(x)).all()


def test_gru_cell_is_one_argument():
    model = RNNClassifier(cell="gru", num_units=32, num_layers=2, dropout=0.0)
    assert isinstance(model.rnn, torch.nn.GRU)
    assert model(torch.rand(4, 28, 28)).shape == (4, 10)
    assert all(torch.all(b == 0) for n, b in model.rnn.named_parameters() if n.startswith("bias"))


def test_gru_trains_and_is_recorded(make_cfg):
    from helpers import runs_in

    from lstm_mnist.training import train

    cfg, store = make_cfg("model.cell=gru", "artifacts.model=false", "artifacts.pictures=false")
    train(cfg)
    (run,) = runs_in(store)
    assert run.info.status == "FINISHED" and run.data.params["model.cell"] == "gru"

import torch

from lstm_mnist.model import LSTMClassifier


def test_output_is_one_logit_per_class():
    model = LSTMClassifier(num_units=32, num_layers=2, dropout=0.5)
    assert model(torch.rand(4, 28, 28)).shape == (4, 10)


def test_dropout_after_last_layer_in_training_only():
    # One layer: nn.LSTM's inter-layer dropout does nothing, so zeros must come from ours.
    model = LSTMClassifier(num_units=256, num_layers=1, dropout=0.5)
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
    model = LSTMClassifier(num_units=64, num_layers=2, dropout=0.0)
    h = 64
    for layer in range(2):
        bias = getattr(model.lstm, f"bias_ih_l{layer}") + getattr(model.lstm, f"bias_hh_l{layer}")
        assert torch.all(bias[h : 2 * h] == 1.0)  # forget gate
        assert torch.all(bias[:h] == 0) and torch.all(bias[2 * h :] == 0)
        w_hh = getattr(model.lstm, f"weight_hh_l{layer}")  # (4h, h): orthonormal columns
        assert torch.allclose(w_hh.T @ w_hh, torch.eye(h), atol=1e-4)

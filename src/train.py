"""The command lstm-mnist-train, run from a checkout: lstm_mnist/cli/train.py."""

from lstm_mnist.cli.train import main

if __name__ == "__main__":
    main()

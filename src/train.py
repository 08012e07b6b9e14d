"""The command lstm-mnist-train, run from a checkout: lstm_mnist/cli/train_command.py."""

from lstm_mnist.cli.train_command import main

if __name__ == "__main__":
    main()

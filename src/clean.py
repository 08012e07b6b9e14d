"""The command lstm-mnist-clean, run from a checkout: lstm_mnist/cli/clean.py."""

from lstm_mnist.cli.clean import main

if __name__ == "__main__":
    main()

"""The command lstm-mnist-compare, run from a checkout: lstm_mnist/cli/compare.py."""

from lstm_mnist.cli.compare import main

if __name__ == "__main__":
    main()

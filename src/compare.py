"""The command lstm-mnist-compare, run from a checkout: lstm_mnist/cli/compare_command.py."""

from lstm_mnist.cli.compare_command import main

if __name__ == "__main__":
    main()

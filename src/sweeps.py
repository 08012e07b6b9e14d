"""The command lstm-mnist-sweeps, run from a checkout: lstm_mnist/cli/sweeps_command.py."""

from lstm_mnist.cli.sweeps_command import main

if __name__ == "__main__":
    main()

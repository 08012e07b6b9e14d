"""The command lstm-mnist-clean, run from a checkout: lstm_mnist/cli/clean_command.py."""

from lstm_mnist.cli.clean_command import main

if __name__ == "__main__":
    main()

"""The command lstm-mnist-predict, run from a checkout: lstm_mnist/cli/predict_command.py."""

from lstm_mnist.cli.predict_command import main

if __name__ == "__main__":
    main()

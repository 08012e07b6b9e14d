"""The command lstm-mnist-predict, run from a checkout: lstm_mnist/cli/predict.py."""

from lstm_mnist.cli.predict import main

if __name__ == "__main__":
    main()

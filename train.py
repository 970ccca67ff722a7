"""The published `train.py` command; the program lives in `PromptIQA.commands.train`."""
from PromptIQA.commands.train import cli

if __name__ == "__main__":
    cli()

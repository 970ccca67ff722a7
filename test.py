"""The published `test.py` command; the program lives in `PromptIQA.commands.score`."""
from PromptIQA.commands.score import cli

if __name__ == "__main__":
    cli()

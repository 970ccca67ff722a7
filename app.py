"""The web demo: `python app.py [--checkpoint PATH]`; the program lives in `PromptIQA.commands.app`."""
from PromptIQA.commands.app import cli

if __name__ == "__main__":
    cli()

"""The command-line programs, each a `main(argv)` plus a console-script `cli()`:
`score` (the published `test.py`) and `train` (the published `train.py`)."""

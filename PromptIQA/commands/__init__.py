"""The command-line programs, each a `main(argv)` plus a console-script `cli()`: `score` (the published
`test.py`, console script `promptiqa-score`), `train` (`train.py`, `promptiqa-train`) and `app`
(`app.py`, `promptiqa-app`)."""

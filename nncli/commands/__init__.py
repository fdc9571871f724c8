"""What each `nncli` command does, one module per command (`nncli train` is `commands/train.py`).

`nncli.cli` parses the arguments and calls these functions; they return results and raise
`NncliError`s, and print nothing of their own, so Python code can call them too.
"""

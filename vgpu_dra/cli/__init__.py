"""Command-line fragments shared by the processes' `app.py` modules: validated
numeric options with environment twins, HAMi's request defaults."""

"""Tools that drive a real server from outside: the benchmark (`bench/`), the soak, the corpus
they send, and the launcher they (and the tests) start gunicorn with."""
